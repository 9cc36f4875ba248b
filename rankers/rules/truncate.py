"""Cut the slate to the requested feed size; last, so earlier rules can reach below the fold."""

from __future__ import annotations

from dataclasses import dataclass

from rankers.rules.base import RerankContext, Slot


@dataclass
class Truncate:
    name: str = "truncate"

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        return slots[: ctx.feed_size]
