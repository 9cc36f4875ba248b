"""The logged-traffic format: one row per impression slot, from this simulator or any other system.

Evaluation reads logs through :func:`read_log`, which accepts Parquet or CSV and checks the columns,
so a log from another system works as long as it has the required columns.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from simulator.truth import ACTIONS

LOG_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("member_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("item_type", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("propensity", pa.float64(), nullable=False),
        *[pa.field(a, pa.bool_(), nullable=False) for a in ACTIONS],
        pa.field("predicted", pa.float64()),
        pa.field("true_p", pa.float64()),
    ]
)
REQUIRED_COLUMNS = ["request_id", "position", "item_id", "clicked", "propensity"]


class LogFormatError(ValueError):
    """A log file that does not follow the logged-traffic format; the message says what is wrong."""


def read_log(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a log (``.parquet`` or ``.csv``) and check the columns evaluation needs."""
    path = Path(path)
    if not path.exists():
        raise LogFormatError(f"log {path} does not exist")
    if path.suffix == ".csv":
        df = pacsv.read_csv(path).to_pandas()
        if columns:
            missing = [c for c in columns if c not in df]
            if missing:
                raise LogFormatError(f"log {path} lacks column(s) {missing}")
            df = df[columns]
    else:
        try:
            df = pq.read_table(path, columns=columns).to_pandas()
        except (pa.ArrowInvalid, KeyError) as err:
            raise LogFormatError(f"log {path}: {err}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df and (columns is None or c in columns)]
    if missing:
        raise LogFormatError(f"log {path} lacks required column(s) {missing}")
    if "propensity" in df and ((df["propensity"] <= 0) | (df["propensity"] > 1)).any():
        bad = int(((df["propensity"] <= 0) | (df["propensity"] > 1)).sum())
        raise LogFormatError(f"log {path}: {bad} row(s) with propensity outside (0, 1]")
    if "clicked" in df:
        df["clicked"] = df["clicked"].astype(int)
    return df


def write_csv(table: pa.Table, path: str | Path) -> None:
    pacsv.write_csv(table, path)
