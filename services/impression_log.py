"""The mixer's impression log, in the logged-traffic format (``simulator/logs.py``), for evaluation.

The mixer knows what it served, with the exact propensity and the pCTR, but not what the member saw
or did. Front ends log impressions and engagements on ``member-events`` with the feed's
``request_id`` (as the simulator does), so the mixer joins the two: a served item becomes a log row
when its impression arrives, collects the member's actions on it under that request, and is written
``window_s`` after serving. Served items never impressed (below the fold) are dropped when their
window ends: the log holds impressions only, as the format requires.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from feedrank.contracts import EventType, MemberEvent, RankedFeed
from simulator.logs import LOG_SCHEMA
from simulator.session import ACTION_EVENT
from simulator.truth import ACTIONS

log = logging.getLogger(__name__)

# The log's action column each member event sets (the inverse of what the simulator emits per action).
ACTION_OF_EVENT: dict[EventType, str] = {EventType(event): action for action, event in ACTION_EVENT.items()}
# The log's columns: the logged-traffic format, plus the second pass's model version.
IMPRESSION_SCHEMA = LOG_SCHEMA.append(pa.field("model_version", pa.string()))


@dataclass
class ImpressionJoiner:
    """Pure stream state: served items waiting for their impression and actions. Clock is the caller's."""

    window_s: float = 300.0
    # Rows hold only strings, numbers, booleans and None, so the garbage collector does not track them:
    # a mixer holds a window's worth of served items (150,000 at 25 feeds/s for 300 s), and as objects
    # each full collection walked them all (30 ms and growing).
    _served: dict[tuple[str, str], dict[str, object]] = field(default_factory=dict)
    _impressed: set[tuple[str, str]] = field(default_factory=set)
    _expiry: list[tuple[float, tuple[str, str]]] = field(default_factory=list)

    def served(self, feed: RankedFeed, requested_at: float, now: float) -> None:
        for it in feed.items:
            key = (feed.request_id, it.item_id)
            row: dict[str, object] = {
                "request_id": feed.request_id,
                "member_id": feed.member_id,
                "timestamp": requested_at,
                "position": it.position,
                "item_id": it.item_id,
                "item_type": it.item_type.value,
                "source": it.source,
                "propensity": it.propensity,
                **dict.fromkeys(ACTIONS, False),
                "predicted": it.score,
                "true_p": None,
                "model_version": feed.model_version,
            }
            self._served[key] = row
            self._expiry.append((now + self.window_s, key))

    def observe(self, e: MemberEvent) -> None:
        """An event with a ``request_id`` of a feed this worker served marks its impression or action."""
        rid = e.attributes.get("request_id")
        if rid is None or e.item_id is None:
            return
        key = (str(rid), e.item_id)
        row = self._served.get(key)
        if row is None:
            return
        if e.event_type == EventType.IMPRESSION:
            self._impressed.add(key)
            if "true_p" in e.attributes:  # simulated members log the truth; real ones do not
                row["true_p"] = float(e.attributes["true_p"])  # type: ignore[arg-type]
        elif (action := ACTION_OF_EVENT.get(e.event_type)) is not None:
            row[action] = True

    def due(self, now: float) -> list[dict[str, object]]:
        """Rows whose window has ended, impressed ones only (removed from the state)."""
        out: list[dict[str, object]] = []
        keep = 0
        for i, (expires, key) in enumerate(self._expiry):
            if expires > now:
                keep = i
                break
            row = self._served.pop(key, None)
            if row is not None and key in self._impressed:
                out.append(row)
            self._impressed.discard(key)
        else:
            keep = len(self._expiry)
        del self._expiry[:keep]
        return out

    def flush(self) -> list[dict[str, object]]:
        """Everything impressed so far (at shutdown: a row without its late actions beats no row)."""
        rows = [row for key, row in self._served.items() if key in self._impressed]
        self._served.clear()
        self._impressed.clear()
        self._expiry.clear()
        return rows

    def __len__(self) -> int:
        return len(self._served)


class ImpressionLogWriter:
    """Appends rows as Parquet part files under ``folder`` (one file per flush, never rewritten)."""

    def __init__(self, folder: Path, worker: str) -> None:
        self.folder = folder
        self.worker = worker
        self.rows_written = 0

    def write(self, rows: Iterable[dict[str, object]]) -> Path | None:
        rows = list(rows)
        if not rows:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(rows, schema=IMPRESSION_SCHEMA)
        name = f"impressions-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{self.worker}-{time.time_ns() % 10**9}"
        tmp = self.folder / f".{name}.tmp"
        pq.write_table(table, tmp)
        path = self.folder / f"{name}.parquet"
        os.replace(tmp, path)  # readers never see a half-written file
        self.rows_written += len(rows)
        return path


def read_impression_log(folder: Path) -> pa.Table:
    """Every part file of a mixer's impression log, as one table (empty if none)."""
    parts = sorted(folder.glob("impressions-*.parquet"))
    if not parts:
        return IMPRESSION_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(p, schema=IMPRESSION_SCHEMA) for p in parts])
