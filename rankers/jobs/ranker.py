"""Jobs FPR: every open job the member may see, scored by skill match and popularity."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from feedrank.contracts import ItemType
from rankers.fpr import FirstPassRanker, jaccard, sigmoid
from rankers.inventory import Inventory


@dataclass
class OpenJobsSource:
    max_age_hours: float = 24 * 30

    def candidates(self, inv: Inventory, member_id: str, now: float) -> Iterable[str]:
        for item_id in inv.by_type.get(ItemType.JOB, ()):
            item = inv.items[item_id]
            if inv.can_see(member_id, item) and (now - item.created_at) / 3600 <= self.max_age_hours:
                yield item_id


@dataclass
class SkillMatchScorer:
    """Logistic prior on skill overlap; issue 5 replaces it with the embedding towers."""

    bias: float = -3.5
    w_match: float = 4.0
    w_popularity: float = 0.2
    version: str = "prior-v1"

    def score(self, inv: Inventory, member_id: str, item_id: str, now: float) -> tuple[float, dict[str, float]]:
        item = inv.items[item_id]
        match = jaccard(inv.profile(member_id).skills, item.skills)
        pop = math.log1p(item.engagements)
        age_h = max(0.0, (now - item.created_at) / 3600)
        return sigmoid(self.bias + self.w_match * match + self.w_popularity * pop), {
            "skill_match": match,
            "popularity": pop,
            "age_hours": age_h,
        }


def build(name: str = "jobs", k: int = 50, **params: float) -> FirstPassRanker:
    return FirstPassRanker(name, OpenJobsSource(), SkillMatchScorer(**params), k)
