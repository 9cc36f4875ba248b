"""The first-pass ranker contract: a candidate source plus a scorer, per inventory.

An FPR answers "what are this member's best k items of my inventory?" with scores on a probability
scale, its model version, and the features it used, so that the mixer can log and explain them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from feedrank.contracts import Candidate
from rankers.inventory import Inventory


class CandidateSource(Protocol):
    def candidates(self, inv: Inventory, member_id: str, now: float) -> Iterable[str]:
        """Ids of the items (or members) this inventory could show the member."""
        ...


class Scorer(Protocol):
    version: str

    def score(self, inv: Inventory, member_id: str, item_id: str, now: float) -> tuple[float, dict[str, float]]:
        """Probability of engagement, and the features behind it."""
        ...


@dataclass
class FirstPassRanker:
    name: str
    source: CandidateSource
    scorer: Scorer
    k: int = 50

    @property
    def model_version(self) -> str:
        return f"{self.name}/{self.scorer.version}"

    def top_k(self, inv: Inventory, member_id: str, now: float, k: int | None = None) -> list[Candidate]:
        k = self.k if k is None else k
        scored: list[Candidate] = []
        for item_id in self.source.candidates(inv, member_id, now):
            p, feats = self.scorer.score(inv, member_id, item_id, now)
            item = inv.items.get(item_id)
            if item is not None:
                scored.append(
                    Candidate(
                        item_id=item_id, item_type=item.item_type, actor_id=item.actor_id, score=p, features=feats
                    )
                )
            else:  # a member as the item (people you may know): the actor is that member
                scored.append(Candidate(item_id=item_id, item_type="member", actor_id=item_id, score=p, features=feats))
        scored.sort(key=lambda c: (-c.score, c.item_id))
        return scored[:k]


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)
