"""What every ``feedrank eval`` command does with its result: JSON or tables on stdout, and a report.

Stdout carries only the result (pure JSON with ``--json``), so the report's path goes to stderr. Only
the standard library is imported at module level: the estimators' modules import :func:`json_number`.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from evaluation.report import Report


def json_number(v: Any) -> float | None:
    """JSON has no NaN or infinity: an undefined number is null."""
    f = float(v)
    return f if math.isfinite(f) else None


def console() -> Console:
    """The terminal's console; piped, a wide one, so tables are not squeezed into 80 columns."""
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=200)


def rich_table(title: str, frame: pd.DataFrame, caption: str = "") -> Table:
    """A rich Table of a display frame (strings): the first column left, the others right-aligned."""
    from rich.table import Table

    table = Table(title=title, caption=caption or None, title_justify="left")
    for i, col in enumerate(frame.columns):
        first = i == 0
        table.add_column(str(col), justify="left" if first else "right", no_wrap=not first, min_width=len(str(col)))
    for row in frame.itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    return table


def emit(
    command: str,
    doc: dict[str, Any],
    as_json: bool,
    show: Callable[[], None],
    report_dir: str | None,
    build_report: Callable[[], Report],
) -> int:
    """Print ``doc`` (or ``show()`` it), write the report if asked; the command's exit code."""
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        show()
    if report_dir:
        try:
            path = build_report().write(report_dir)
        except OSError as err:
            print(f"feedrank eval {command}: cannot write the report: {err}", file=sys.stderr)
            return 1
        print(f"report: {path}", file=sys.stderr)
    return 0
