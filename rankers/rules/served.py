"""Drop items the mixer served the member moments ago: a member who refreshes should get a new feed,
not the one they just scrolled past (their impressions may not have reached the feature store yet,
so ``seen`` cannot catch these)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rankers.rules.base import RerankContext, Slot


@dataclass
class ServedFilter:
    window_s: float = 900.0
    name: str = "served"

    def __post_init__(self) -> None:
        if not (isinstance(self.window_s, int | float) and math.isfinite(self.window_s) and self.window_s >= 0):
            raise ValueError(f"served.window_s must be a number of seconds >= 0, got {self.window_s!r}")

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        return [s for s in slots if s.served_at is None or ctx.now - s.served_at >= self.window_s]
