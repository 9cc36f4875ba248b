"""The offline store: every row the feature service writes online is also appended here as Parquet,
and training sets join it point-in-time.

Layout: ``ROOT/VIEW/part-*.parquet`` with the join keys, the stored columns, ``event_timestamp``
(the row's ``as_of``: the newest event time folded into it) and ``written_at`` (wall clock).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq

from features.families import VIEWS, derive

_seq = itertools.count()


class OfflineAppender:
    def __init__(self, root: Path) -> None:
        self.root = root

    def append(
        self, rows_by_view: dict[str, list[dict] | pd.DataFrame | pa.Table], written_at: float | None = None
    ) -> int:
        written_at = time.time() if written_at is None else written_at
        n = 0
        for view, rows in rows_by_view.items():
            if len(rows) == 0:
                continue
            if not isinstance(rows, pa.Table):
                rows = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
            as_of_ns = np.round(rows["as_of"].to_numpy() * 1e9).astype(np.int64)
            table = rows.append_column("event_timestamp", pa.array(as_of_ns, type=pa.timestamp("ns", tz="UTC")))
            table = table.append_column("written_at", pa.array(np.full(len(table), written_at)))
            folder = self.root / view
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{int(written_at * 1e6):017d}-{next(_seq):06d}.parquet"
            tmp = folder / f".{name}.tmp"
            pq.write_table(table, tmp)
            tmp.replace(folder / name)  # readers never see half a file
            n += len(table)
        return n


def read_view(root: Path, view: str) -> pd.DataFrame:
    """Every version of every row of a view, oldest first (replays rewrite identical versions: dropped)."""
    folder = root / view
    parts = sorted(folder.glob("part-*.parquet")) if folder.exists() else []
    if not parts:
        return pd.DataFrame()
    df = pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)
    keys = [c for c in df.columns if c not in ("written_at",)]
    return df.drop_duplicates(subset=keys, keep="last").sort_values(["as_of", "written_at"], kind="stable")


def point_in_time(impressions: pd.DataFrame, root: Path) -> pd.DataFrame:
    """Model features for each impression, from the offline rows as they stood strictly before it.

    ``impressions`` needs member_id, item_id, item_type, actor_id and timestamp (epoch seconds).
    A row version whose ``as_of`` is not earlier than the impression is never used: no leakage.
    """
    base = impressions.reset_index(drop=True).copy()
    base["_row"] = range(len(base))
    base["_ts"] = base["timestamp"].astype(float)
    stored = pd.DataFrame({"_row": base["_row"]})
    for view in VIEWS:
        hist = read_view(root, view.name)
        cols = [f"{view.name}__{c}" for c in view.stored]
        if hist.empty:
            continue
        keys = list(view.join_keys)
        right = hist[[*keys, *view.stored]].rename(columns=dict(zip(view.stored, cols, strict=True)))
        right["_ts"] = hist["as_of"].astype(float)
        right = right.sort_values("_ts", kind="stable")
        left = base[["_row", "_ts", *keys]].sort_values("_ts", kind="stable")
        joined = pd.merge_asof(left, right, on="_ts", by=keys, allow_exact_matches=False, direction="backward")
        stored = stored.merge(joined[["_row", *cols]], on="_row", how="left")
    stored = stored.sort_values("_row").reset_index(drop=True)
    return derive(stored.drop(columns=["_row"]), base["_ts"].to_numpy())
