"""Keep each FPR's own order within its inventory: the SPR decides how much each inventory is worth at
each rank (the mix), the FPR which of its items come first.

The inventory's SPR scores are handed out again in the FPR's order: its best-scored slot gets the
inventory's highest score, its second the second highest, and so on. The set of scores an inventory
brings is unchanged, so the mix and every later rule's thresholds are too; each slot's ``pctr`` stays
its own estimate. Why: the SPR is fitted on logged impressions, whose candidates the logging policy
chose, and serves on each FPR's top-k, where the FPR's fine distinctions between its own items are
what it was built for. In the offline evaluation of the whole feed the FPRs' order within their
inventories beat the SPR's (BENCHMARKS.md, "the whole feed").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rankers.rules.base import RerankContext, Slot, resorted


@dataclass
class FprOrder:
    sources: Sequence[str] | None = None  # the inventories kept in their FPR's order; None: every one
    name: str = "fpr_order"

    def __post_init__(self) -> None:
        s = self.sources
        if s is not None:
            if isinstance(s, str) or not isinstance(s, Iterable) or not all(isinstance(x, str) and x for x in s):
                raise ValueError(f"fpr_order.sources must be a list of FPR names or unset, got {s!r}")
            self.sources = tuple(s)

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        by_source: dict[str, list[Slot]] = {}
        for s in slots:
            if self.sources is None or s.source in self.sources:
                by_source.setdefault(s.source, []).append(s)
        for group in by_source.values():
            scores = sorted((s.score for s in group), reverse=True)
            # stable: equal FPR scores keep the slate's order; an unscored item comes after the scored
            fpr_order = sorted(group, key=lambda s: math.inf if math.isnan(s.fpr_score) else -s.fpr_score)
            for s, score in zip(fpr_order, scores, strict=True):
                s.score = score
        return resorted(slots, self.name)
