"""``feedrank train fpr NAME``: fit one FPR's scorer from logged traffic and save a versioned artifact.

Traffic comes from a ``feedrank simulate --out DIR`` folder (``events.parquet`` and the impression
log), or from the simulated traffic the demo publishes (same world for the same parameters, so the
models' id embeddings match the members the services will see).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from feedrank.contracts import MemberEvent
from feedrank.progress import progress_bar
from feedrank.settings import Settings
from rankers.registry import load_config
from rankers.training import LoggedTraffic
from services.model_store import ModelStore
from simulator.logs import read_log
from simulator.session import events_to_member_events


class TrafficNotFound(FileNotFoundError):
    """A data folder without the files training needs; the message names what is missing."""


def load_events(data: Path) -> list[MemberEvent]:
    """The member events of a ``feedrank simulate`` output folder (``events.parquet``), in time order
    (stable: events of one moment keep their file order)."""
    events_path = data / "events.parquet"
    if not events_path.exists():
        raise TrafficNotFound(f"{data} needs events.parquet; run feedrank simulate")
    batches = pq.ParquetFile(events_path).iter_batches(65_536)
    events = [e for b in batches for e in events_to_member_events(pa.Table.from_batches([b]))]
    return sorted(events, key=lambda e: e.timestamp)


def load_traffic(data: Path) -> LoggedTraffic:
    """Events and logged traffic from a ``feedrank simulate`` output folder (or any folder in its format)."""
    logs = [p for p in (data / "impressions.parquet", data / "impressions.csv") if p.exists()]
    if not (data / "events.parquet").exists() or not logs:
        raise TrafficNotFound(f"{data} needs events.parquet and impressions.parquet (or .csv); run feedrank simulate")
    return LoggedTraffic(load_events(data), read_log(logs[0]), f"data={data}")


def train_fpr(
    settings: Settings,
    name: str,
    traffic: LoggedTraffic,
    params: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> tuple[str, dict[str, Any]]:
    """Train the configured FPR ``name`` and save it as ``fpr-NAME``; returns (version, metrics)."""
    spec = load_config(settings.pipeline_config).fpr(name)
    trainer = spec.resolve_trainer()
    started = time.perf_counter()
    with progress_bar(disable=not show_progress) as progress:
        trained = trainer(traffic, dict(params or {}), progress).stamp(traffic)
    seconds = time.perf_counter() - started
    version = ModelStore(settings.model_dir).save(
        spec.artifact,
        trained.scorer,
        {
            "fpr": name,
            "trained_on": traffic.description,
            "events": len(traffic.events),
            "log_rows": len(traffic.log),
            "train_seconds": round(seconds, 1),
            "metrics": trained.metrics,
            "params": trained.params,
        },
    )
    return version, {**trained.metrics, "train_seconds": round(seconds, 1)}
