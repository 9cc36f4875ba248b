"""Prefer recent items: a post loses half of its freshness every ``half_life_h`` hours, down to
``floor`` of its score (an old post that is very relevant can still make the feed), and items older
than their type's ``max_age_h`` are dropped (a month-old job is likely filled). Per item type, because
a day is old for a post and young for a course; types not listed, and items without a creation time
(member cards), are left alone."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from feedrank.contracts import ItemType
from rankers.rules.base import RerankContext, Slot, resorted

ITEM_TYPES = tuple(t.value for t in ItemType)


@dataclass
class Freshness:
    half_life_h: dict[str, float] = field(default_factory=lambda: {"post": 24.0})
    floor: float = 0.5
    max_age_h: dict[str, float] = field(default_factory=lambda: {"post": 168.0, "job": 720.0})
    name: str = "freshness"

    def __post_init__(self) -> None:
        self.half_life_h = _hours_by_type(self.half_life_h, "freshness.half_life_h")
        self.max_age_h = _hours_by_type(self.max_age_h, "freshness.max_age_h")
        if isinstance(self.floor, bool) or not isinstance(self.floor, int | float) or not 0.0 <= self.floor <= 1.0:
            raise ValueError(f"freshness.floor must be in [0, 1], got {self.floor!r}")

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        kept: list[Slot] = []
        for s in slots:
            if s.created_at is None:
                kept.append(s)
                continue
            age_h = max(0.0, ctx.now - s.created_at) / 3600.0
            max_age = self.max_age_h.get(s.item_type)
            if max_age is not None and age_h > max_age:
                continue
            half_life = self.half_life_h.get(s.item_type)
            if half_life is not None:
                s.score *= self.floor + (1.0 - self.floor) * 0.5 ** (age_h / half_life)
            kept.append(s)
        return resorted(kept, self.name)


def _hours_by_type(table: object, where: str) -> dict[str, float]:
    if not isinstance(table, Mapping):
        raise ValueError(f"{where} must be a table of item type -> hours, got {table!r}")
    out: dict[str, float] = {}
    for item_type, hours in table.items():
        if item_type not in ITEM_TYPES:
            raise ValueError(f"{where} has unknown item type {item_type!r}; known: {list(ITEM_TYPES)}")
        if isinstance(hours, bool) or not isinstance(hours, int | float) or not (math.isfinite(hours) and hours > 0):
            raise ValueError(f"{where}.{item_type} must be a number of hours > 0, got {hours!r}")
        out[item_type] = float(hours)
    return out
