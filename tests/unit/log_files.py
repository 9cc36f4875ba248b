"""Logs written as a user would hand them to ``feedrank eval``: Parquet or CSV, the two formats it reads."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

LOG_FORMATS = ["parquet", "csv"]


def write_log(frame: pd.DataFrame, directory: Path, fmt: str, stem: str = "impressions") -> Path:
    path = directory / f"{stem}.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    elif fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        raise ValueError(f"unknown log format {fmt!r}; one of {LOG_FORMATS}")
    return path
