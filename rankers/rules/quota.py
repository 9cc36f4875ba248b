"""Per-inventory quotas: every inventory that answered gets a minimum of the visible slots, and no
inventory takes more than its cap, so the feed stays a mix even when one inventory scores higher.

``limits`` sets one inventory's own bounds, e.g. ``{"jobs": {"min": 1, "max": 4}}``: ``min`` replaces
``min_per_source`` and ``max`` replaces the ``max_share`` cap for that inventory (a ``max`` below the
general minimum also lowers that inventory's minimum to it).

``min_score_ratio`` keeps the minimum from forcing in what nobody wants: an item fills its inventory's
guaranteed slot only if its score is at least that share of the score of the last item the feed would
show without quotas (0: always).

``cap_score_ratio`` makes the cap soft: the best item left, if its inventory is at its cap, is held back
only for an item within its own caps scoring at least that share of it (0: always, a hard cap). A cap then
trades at most that much score per slot for the mix, instead of any price."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from rankers.rules.base import RerankContext, Slot


@dataclass
class InventoryQuota:
    min_per_source: int = 1
    max_share: float = 0.5
    limits: dict[str, dict[str, int]] = field(default_factory=dict)
    min_score_ratio: float = 0.0
    cap_score_ratio: float = 0.0
    name: str = "inventory_quota"

    def __post_init__(self) -> None:
        if self.min_per_source < 0:
            raise ValueError(f"inventory_quota.min_per_source must be >= 0, got {self.min_per_source}")
        if not 0.0 < self.max_share <= 1.0:
            raise ValueError(f"inventory_quota.max_share must be in (0, 1], got {self.max_share}")
        if not 0.0 <= self.min_score_ratio <= 1.0:
            raise ValueError(f"inventory_quota.min_score_ratio must be in [0, 1], got {self.min_score_ratio}")
        if not 0.0 <= self.cap_score_ratio <= 1.0:
            raise ValueError(f"inventory_quota.cap_score_ratio must be in [0, 1], got {self.cap_score_ratio}")
        if not isinstance(self.limits, Mapping):
            raise ValueError(f"inventory_quota.limits must be a table of source -> {{min, max}}, got {self.limits!r}")
        for source, bounds in self.limits.items():
            where = f"inventory_quota.limits.{source}"
            if not isinstance(bounds, Mapping):
                raise ValueError(f"{where} must be a table with keys min and/or max, got {bounds!r}")
            unknown = sorted(set(bounds) - {"min", "max"})
            if unknown:
                raise ValueError(f"{where} has unknown keys {unknown}; allowed: min, max")
            for key, value in bounds.items():
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{where}.{key} must be an integer >= 0, got {value!r}")
            if bounds.get("min", 0) > bounds.get("max", math.inf):
                raise ValueError(f"{where}.min ({bounds['min']}) must not exceed {where}.max ({bounds['max']})")

    def bounds(self, source: str, feed_size: int) -> tuple[int, int]:
        """The (minimum, cap) of visible slots for ``source`` in a feed of ``feed_size``."""
        own = self.limits.get(source, {})
        if "max" in own:
            cap = own["max"]
            return min(own.get("min", self.min_per_source), cap), cap
        low = own.get("min", self.min_per_source)
        return low, max(low, math.ceil(self.max_share * feed_size))

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        size = min(ctx.feed_size, len(slots))
        bounds = {source: self.bounds(source, ctx.feed_size) for source in {s.source for s in slots}}
        chosen: set[int] = set()
        taken: Counter[str] = Counter()
        floor = self.min_score_ratio * slots[size - 1].score if size else 0.0
        # Each inventory's best items first, up to its minimum (if good enough)...
        for i, s in enumerate(slots):
            if taken[s.source] < bounds[s.source][0] and len(chosen) < size and s.score >= floor:
                chosen.add(i)
                taken[s.source] += 1
        # ...then slot by slot the best of the rest within the caps; past a cap only when the best item
        # within the caps scores below cap_score_ratio of the best item left.
        rest = [i for i in range(len(slots)) if i not in chosen]
        while len(chosen) < size and rest:
            best = rest[0]
            if taken[slots[best].source] >= bounds[slots[best].source][1]:
                within = next((i for i in rest if taken[slots[i].source] < bounds[slots[i].source][1]), None)
                if within is None:
                    break  # every inventory left is at its cap: the rest follows in rank order
                if slots[within].score >= self.cap_score_ratio * slots[best].score:
                    best = within
            rest.remove(best)
            chosen.add(best)
            taken[slots[best].source] += 1
        order = sorted(chosen)
        for rank, i in enumerate(order):
            if i != rank:  # promoted past a better-scored item
                slots[i].moved_by.append(self.name)
        return [slots[i] for i in order] + [s for i, s in enumerate(slots) if i not in chosen]
