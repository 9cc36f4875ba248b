"""Network-activity FPR: posts by connections and followed actors, scored by recency, tie and interest."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from feedrank.contracts import ItemType
from rankers.fpr import FirstPassRanker, jaccard, sigmoid
from rankers.inventory import Inventory


@dataclass
class FollowFeedSource:
    max_age_hours: float = 24 * 14
    per_actor: int = 20

    def candidates(self, inv: Inventory, member_id: str, now: float) -> Iterable[str]:
        actors = inv.connections.get(member_id, set()) | inv.follows.get(member_id, set())
        for actor in actors:
            for item_id in inv.by_actor.get(actor, ())[-self.per_actor :]:
                item = inv.items[item_id]
                if item.item_type != ItemType.POST or not inv.can_see(member_id, item):
                    continue
                if (now - item.created_at) / 3600 <= self.max_age_hours:
                    yield item_id


@dataclass
class RecencyTieScorer:
    """Logistic score; weights are hand-set priors until the LightGBM model of issue 5 replaces them."""

    bias: float = -2.5
    w_interest: float = 2.0
    w_tie: float = 0.7
    w_popularity: float = 0.3
    half_life_hours: float = 24.0
    version: str = "prior-v1"

    def score(self, inv: Inventory, member_id: str, item_id: str, now: float) -> tuple[float, dict[str, float]]:
        item = inv.items[item_id]
        age_h = max(0.0, (now - item.created_at) / 3600)
        recency = 0.5 ** (age_h / self.half_life_hours)
        interest = jaccard(inv.profile(member_id).skills, item.skills)
        tie = 1.0 if item.actor_id in inv.connections.get(member_id, ()) else 0.0
        pop = math.log1p(item.engagements)
        logit = self.bias + self.w_interest * interest + self.w_tie * tie + self.w_popularity * pop + recency
        return sigmoid(logit), {"age_hours": age_h, "interest": interest, "tie": tie, "popularity": pop}


def build(name: str = "network", k: int = 50, **params: float) -> FirstPassRanker:
    return FirstPassRanker(name, FollowFeedSource(), RecencyTieScorer(**params), k)
