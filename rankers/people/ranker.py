"""People-you-may-know FPR: friends of friends, scored by Adamic-Adar over common connections."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from rankers.fpr import FirstPassRanker, jaccard, sigmoid
from rankers.inventory import Inventory


@dataclass
class FriendsOfFriendsSource:
    """Never the member, an existing connection, or anyone blocked either way."""

    max_candidates: int = 2000

    def candidates(self, inv: Inventory, member_id: str, now: float) -> Iterable[str]:
        mine = inv.connections.get(member_id, set())
        out: set[str] = set()
        for friend in mine:
            for fof in inv.connections.get(friend, ()):
                if fof != member_id and fof not in mine and not inv.is_blocked(member_id, fof):
                    out.add(fof)
                    if len(out) >= self.max_candidates:
                        return sorted(out)
        return sorted(out)


@dataclass
class AdamicAdarScorer:
    bias: float = -3.0
    w_aa: float = 1.2
    w_skills: float = 1.5
    version: str = "adamic-adar-v1"

    def score(self, inv: Inventory, member_id: str, item_id: str, now: float) -> tuple[float, dict[str, float]]:
        common = inv.connections.get(member_id, set()) & inv.connections.get(item_id, set())
        aa = sum(1.0 / math.log(max(2, len(inv.connections.get(z, ())))) for z in common)
        skills = jaccard(inv.profile(member_id).skills, inv.profile(item_id).skills)
        return sigmoid(self.bias + self.w_aa * aa + self.w_skills * skills), {
            "adamic_adar": aa,
            "common_connections": float(len(common)),
            "skill_similarity": skills,
        }


def build(name: str = "people", k: int = 20, **params: float) -> FirstPassRanker:
    return FirstPassRanker(name, FriendsOfFriendsSource(), AdamicAdarScorer(**params), k)
