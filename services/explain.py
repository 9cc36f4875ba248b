"""``feedrank explain REQUEST_ID``: why each item of a served feed is where it is.

The mixer saved, per request, each item's feature-family contributions to its logit and the rules
that moved it, and which rule removed which candidates (``services/feed_state.py``).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from feedrank.settings import Settings
from services.feed_state import ExplanationStore


class ExplanationNotFound(LookupError):
    """No explanation for that request: unknown, expired, or explanations are off."""


def load_explanation(settings: Settings, request_id: str) -> dict[str, Any]:
    doc = ExplanationStore(settings.redis_client(), settings).load(request_id)
    if doc is None:
        raise ExplanationNotFound(
            f"no explanation for request {request_id!r}: unknown, older than FEEDRANK_EXPLAIN_TTL_S="
            f"{settings.explain_ttl_s:.0f}s, or served with explanations off"
        )
    return doc


def render(doc: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    items = doc["items"]
    families = list(items[0]["contributions"]) if items else []
    table = Table(
        title=f"request {doc['request_id']} for {doc['member_id']}  ({doc['candidates']} candidates, "
        f"{doc['gather_ms']:.0f} ms, worker {doc['worker']})",
        caption="family columns: each family's share of the logit, relative to the average training row",
    )
    for col in ("pos", "item", "source", "FPR", "pCTR@top", "pCTR", "prop"):
        table.add_column(col, justify="left" if col in ("item", "source") else "right")
    for fam in families:
        table.add_column(fam, justify="right")
    table.add_column("moved by")
    for it in items:
        table.add_row(
            str(it["position"]),
            f"{it['item_id']} ({it['item_type']})",
            it["source"],
            f"{it['fpr_score']:.3f}",
            f"{it['pctr_top']:.3f}",
            f"{it['score']:.3f}",
            f"{it['propensity']:.3f}",
            *[_signed(it["contributions"][f]) for f in families],
            ", ".join(it["moved_by"]) or "-",
        )
    console.print(table)
    versions = ", ".join(f"{k}={v}" for k, v in doc["model_versions"].items())
    console.print(f"models: {versions}")
    console.print(f"answered: {doc['sources_answered']}; missing: {doc['sources_missing']}")
    for rule, ids in doc["dropped"].items():
        shown = ", ".join(ids[:8]) + (f" (+{len(ids) - 8} more)" if len(ids) > 8 else "")
        console.print(f"removed by [bold]{rule}[/]: {len(ids)}: {shown}")


def _signed(v: float) -> str:
    colour = "green" if v > 0.05 else "red" if v < -0.05 else "dim"
    return f"[{colour}]{v:+.2f}[/]"
