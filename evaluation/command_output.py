"""What every ``feedrank eval`` command does with its result: JSON or a table on stdout, and a report.

Stdout carries only the result (pure JSON with ``--json``), so the report's path goes to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evaluation.report import Report


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
