"""Evaluation reports a reader opens without the terminal: one Markdown file, its plots beside it.

Every ``feedrank eval`` command builds a :class:`Report` from the same numbers it prints, so the report
and the JSON never disagree. Figures are drawn with matplotlib's Agg backend (no display needed) and
saved as PNG next to ``report.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "figure"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pandas' ``to_markdown`` would need the tabulate package)."""
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


@dataclass
class Report:
    """Sections in order: text, tables and figures, written by :meth:`write`."""

    title: str
    _parts: list[tuple[str, Any, str]] = field(default_factory=list)

    def add_text(self, text: str) -> None:
        self._parts.append(("text", text, ""))

    def add_table(self, heading: str, frame: pd.DataFrame) -> None:
        self._parts.append(("table", frame, heading))

    def add_figure(self, heading: str, figure: Figure) -> None:
        self._parts.append(("figure", figure, heading))

    def write(self, directory: str | Path) -> Path:
        """Write ``report.md`` and one PNG per figure into ``directory``; returns the Markdown file."""
        import matplotlib.pyplot as plt

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        lines = [f"# {self.title}", ""]
        used: set[str] = set()
        for kind, body, heading in self._parts:
            if heading:
                lines += [f"## {heading}", ""]
            if kind == "text":
                lines += [body, ""]
            elif kind == "table":
                lines += [markdown_table(body), ""]
            else:
                name = _slug(heading)
                while name in used:
                    name += "-2"
                used.add(name)
                body.savefig(out / f"{name}.png", dpi=120, bbox_inches="tight")
                plt.close(body)
                lines += [f"![{heading}]({name}.png)", ""]
        path = out / "report.md"
        path.write_text("\n".join(lines))
        return path
