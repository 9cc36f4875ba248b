"""The logged-traffic format: one row per impression slot, from this simulator or any other system.

Evaluation reads logs through :func:`read_log`, which accepts Parquet or CSV and checks the columns,
so a log from another system works as long as it has the required columns.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
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


def describe_rows(mask: np.ndarray, limit: int = 10) -> str:
    """``3 row(s) (rows 4, 17, 90)``: how errors name offending rows (0-based, in file order)."""
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(r) for r in rows[:limit])
    more = f", ... {len(rows) - limit} more" if len(rows) > limit else ""
    return f"{len(rows)} row(s) (rows {shown}{more})"


ID_COLUMNS = ("request_id", "member_id", "item_id")


def log_columns(path: str | Path) -> list[str]:
    """The column names of a log without reading its rows (the Parquet schema, the CSV header)."""
    path = Path(path)
    if not path.exists():
        raise LogFormatError(f"log {path} does not exist")
    try:
        if path.suffix == ".csv":
            with path.open(newline="") as f:
                return next(csv.reader(f), [])
        return list(pq.read_schema(path).names)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as err:
        raise LogFormatError(f"log {path}: {err}") from None


def binary_column(frame: pd.DataFrame, column: str, source: str = "") -> np.ndarray:
    """An action column as 0.0/1.0 (from 0/1 or true/false); anything else (2, 0.5, "yes", empty) is an
    error naming the rows, prefixed by ``source`` (e.g. ``"log x.csv: "``)."""
    values = frame[column]
    if values.dtype == bool:
        return values.to_numpy(dtype=np.float64)
    y = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        raise LogFormatError(f"{source}column {column!r} must be 0/1 or true/false; it is not in {describe_rows(bad)}")
    return y


def numeric_column(frame: pd.DataFrame, column: str, non_negative: bool = False) -> np.ndarray:
    """A column as finite floats (booleans as 0/1); errors name the column and the offending rows."""
    raw = frame[column]
    if raw.dtype == bool:
        return raw.to_numpy(dtype=np.float64)
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    empty = raw.isna().to_numpy()
    if empty.any():
        raise LogFormatError(f"column {column!r} is empty in {describe_rows(empty)}")
    bad = ~np.isfinite(values)
    if bad.any():
        raise LogFormatError(f"column {column!r} is not a finite number in {describe_rows(bad)}")
    if non_negative and (values < 0).any():
        raise LogFormatError(f"column {column!r} must not be negative; it is in {describe_rows(values < 0)}")
    return values


def read_log(path: str | Path, columns: list[str] | None = None, required: list[str] | None = None) -> pd.DataFrame:
    """Read a log (``.parquet`` or ``.csv``) and check the columns evaluation needs.

    Only ``columns`` are read when given, so junk elsewhere in the log does not stop an evaluation that
    does not use it. ``required`` (default: the replay columns, those of them in ``columns`` when a
    subset is read) must be present and non-null; ``propensity`` must lie in (0, 1] and ``clicked`` be
    0/1 where read. Ids stay strings (a CSV id "007" is not the number 7). Errors name the rows."""
    path = Path(path)
    have = log_columns(path)
    if required is None:
        required = [c for c in REQUIRED_COLUMNS if columns is None or c in columns]
    missing = [c for c in dict.fromkeys([*(columns or []), *required]) if c not in have]
    if missing:
        raise LogFormatError(f"log {path} lacks column(s) {missing}; it has {have}")
    try:
        if path.suffix == ".csv":
            types = {c: pa.string() for c in ID_COLUMNS if c in have}
            options = pacsv.ConvertOptions(column_types=types, include_columns=columns)
            df = pacsv.read_csv(path, convert_options=options).to_pandas()
        else:
            df = pq.read_table(path, columns=columns).to_pandas()
    except (pa.ArrowInvalid, OSError) as err:
        raise LogFormatError(f"log {path}: {err}") from None
    for c in required:
        null = df[c].isna().to_numpy()
        if null.any():
            raise LogFormatError(f"log {path}: column {c!r} is empty in {describe_rows(null)}")
    if "propensity" in df:
        prop = pd.to_numeric(df["propensity"], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~((prop > 0) & (prop <= 1))
        if bad.any():
            raise LogFormatError(f"log {path}: propensity outside (0, 1] in {describe_rows(bad)}")
    if "clicked" in df:
        df["clicked"] = binary_column(df, "clicked", f"log {path}: ").astype(np.int64)
    return df


def read_columns(
    path: str | Path, required: list[str], present: list[str] | None = None, optional: list[str] | None = None
) -> pd.DataFrame:
    """Read ``required`` (must exist, non-null), ``present`` (must exist, may be null) and whichever of
    ``optional`` the log has: only these, so junk elsewhere in the log does not stop an evaluation that
    does not use it."""
    have = log_columns(path)
    wanted = [*required, *(present or []), *(c for c in optional or [] if c in have)]
    return read_log(path, columns=list(dict.fromkeys(wanted)), required=list(dict.fromkeys(required)))


def write_csv(table: pa.Table, path: str | Path) -> None:
    pacsv.write_csv(table, path)
