"""Lower items the member was shown before and let pass: each earlier impression without an
engagement is evidence the member is not interested, so the score is multiplied by ``factor`` once
per impression, and after ``max_impressions`` such impressions the item is dropped. Items the member
engaged with are left alone (``seen`` decides about those)."""

from __future__ import annotations

from dataclasses import dataclass

from rankers.rules.base import RerankContext, Slot, resorted


@dataclass
class ImpressionDiscount:
    factor: float = 0.7
    max_impressions: int | None = None
    name: str = "impression_discount"

    def __post_init__(self) -> None:
        if isinstance(self.factor, bool) or not isinstance(self.factor, int | float) or not 0.0 < self.factor <= 1.0:
            raise ValueError(f"impression_discount.factor must be in (0, 1], got {self.factor!r}")
        m = self.max_impressions
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"impression_discount.max_impressions must be an integer >= 1 or unset, got {m!r}")

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        kept: list[Slot] = []
        for s in slots:
            if s.impressions > 0 and s.engagements <= 0:
                if self.max_impressions is not None and s.impressions >= self.max_impressions:
                    continue
                s.score *= self.factor**s.impressions
            kept.append(s)
        return resorted(kept, self.name)
