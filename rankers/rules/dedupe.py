"""Drop repeated items: two FPRs may surface the same item; the member sees it once."""

from __future__ import annotations

from dataclasses import dataclass

from rankers.rules.base import RerankContext, Slot


@dataclass
class Dedupe:
    name: str = "dedupe"

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        kept: dict[str, Slot] = {}
        for s in slots:  # in rank order, so the first is the best-scored copy
            kept.setdefault(s.item_id, s)
        return list(kept.values())
