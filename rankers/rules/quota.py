"""Per-inventory quotas: every inventory that answered gets a minimum of the visible slots, and no
inventory takes more than its cap, so the feed stays a mix even when one inventory scores higher."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from rankers.rules.base import RerankContext, Slot


@dataclass
class InventoryQuota:
    min_per_source: int = 1
    max_share: float = 0.5
    name: str = "inventory_quota"

    def __post_init__(self) -> None:
        if self.min_per_source < 0:
            raise ValueError(f"inventory_quota.min_per_source must be >= 0, got {self.min_per_source}")
        if not 0.0 < self.max_share <= 1.0:
            raise ValueError(f"inventory_quota.max_share must be in (0, 1], got {self.max_share}")

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        size = min(ctx.feed_size, len(slots))
        cap = max(self.min_per_source, math.ceil(self.max_share * ctx.feed_size))
        chosen: set[int] = set()
        taken: Counter[str] = Counter()
        # Each inventory's best items first, up to its minimum...
        for i, s in enumerate(slots):
            if taken[s.source] < self.min_per_source and len(chosen) < size:
                chosen.add(i)
                taken[s.source] += 1
        # ...then the best of the rest, within the caps.
        for i, s in enumerate(slots):
            if len(chosen) >= size:
                break
            if i not in chosen and taken[s.source] < cap:
                chosen.add(i)
                taken[s.source] += 1
        order = sorted(chosen)
        for rank, i in enumerate(order):
            if i != rank:  # promoted past a better-scored item
                slots[i].moved_by.append(self.name)
        return [slots[i] for i in order] + [s for i, s in enumerate(slots) if i not in chosen]
