"""Discount repeated actors: each further item by the same actor counts ``discount`` times less."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from rankers.rules.base import RerankContext, Slot


@dataclass
class ActorDiversity:
    discount: float = 0.5
    name: str = "actor_diversity"

    def __post_init__(self) -> None:
        if not 0.0 < self.discount <= 1.0:
            raise ValueError(f"actor_diversity.discount must be in (0, 1], got {self.discount}")

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        seen: Counter[str] = Counter()
        keyed: list[tuple[float, int, Slot]] = []
        for rank, s in enumerate(slots):
            factor = self.discount ** seen[s.actor_id]
            seen[s.actor_id] += 1
            if factor < 1.0:
                s.moved_by.append(self.name)
            keyed.append((s.score * factor, rank, s))
        keyed.sort(key=lambda t: (-t[0], t[1]))
        return [s for _, _, s in keyed]
