"""Feed assembly: merge the FPRs' candidates, score them with the SPR, then apply the rules in order.

Pure: features arrive as a DataFrame, the model and rules as objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from feedrank.contracts import FeedItem, FprCandidates
from rankers.rules.base import RerankContext, RerankRule, Slot


def candidate_frame(answers: Sequence[FprCandidates]) -> pd.DataFrame:
    rows = [
        {
            "item_id": c.item_id,
            "item_type": c.item_type.value,
            "actor_id": c.actor_id,
            "source": a.source,
            "fpr_score": c.score,
        }
        for a in answers
        for c in a.candidates
    ]
    return pd.DataFrame(rows, columns=["item_id", "item_type", "actor_id", "source", "fpr_score"])


def assemble(
    member_id: str, feed_size: int, candidates: pd.DataFrame, scores: Sequence[float], rules: Sequence[RerankRule]
) -> tuple[list[FeedItem], list[Slot]]:
    """Order candidates by SPR score, run each rule, and number the positions."""
    slots = [
        Slot(r.item_id, r.item_type, r.actor_id, r.source, float(s))
        for r, s in zip(candidates.itertuples(index=False), scores, strict=True)
    ]
    slots.sort(key=lambda s: (-s.score, s.item_id))
    ctx = RerankContext(member_id=member_id, feed_size=feed_size)
    for rule in rules:
        slots = rule.apply(slots, ctx)
    slots = slots[:feed_size]
    items = [
        FeedItem(
            item_id=s.item_id,
            item_type=s.item_type,
            actor_id=s.actor_id,
            source=s.source,
            score=min(1.0, max(0.0, s.score)),
            position=i,
        )
        for i, s in enumerate(slots)
    ]
    return items, slots
