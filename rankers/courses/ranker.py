"""Courses FPR: courses sharing skills with the member, not yet seen, scored by match and popularity."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from feedrank.contracts import ItemType
from rankers.fpr import FirstPassRanker, sigmoid
from rankers.inventory import Inventory


@dataclass
class CatalogSource:
    def candidates(self, inv: Inventory, member_id: str, now: float) -> Iterable[str]:
        seen = inv.seen.get(member_id, set())
        for item_id in inv.by_type.get(ItemType.COURSE, ()):
            if item_id not in seen and inv.can_see(member_id, inv.items[item_id]):
                yield item_id


@dataclass
class SkillGrowthScorer:
    """A course is worth most when it overlaps the member's skills but also teaches something new."""

    bias: float = -3.0
    w_overlap: float = 2.5
    w_new: float = 0.8
    w_popularity: float = 0.25
    version: str = "prior-v1"

    def score(self, inv: Inventory, member_id: str, item_id: str, now: float) -> tuple[float, dict[str, float]]:
        item = inv.items[item_id]
        have = inv.profile(member_id).skills
        n = max(1, len(item.skills))
        overlap = len(item.skills & have) / n
        new = len(item.skills - have) / n if overlap > 0 else 0.0
        pop = math.log1p(item.engagements)
        logit = self.bias + self.w_overlap * overlap + self.w_new * new + self.w_popularity * pop
        return sigmoid(logit), {"overlap": overlap, "new_skills": new, "popularity": pop}


def build(name: str = "courses", k: int = 50, **params: float) -> FirstPassRanker:
    return FirstPassRanker(name, CatalogSource(), SkillGrowthScorer(**params), k)
