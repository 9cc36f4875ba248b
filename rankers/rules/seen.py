"""Drop what the member has already seen or dealt with: posts they were shown before (a feed that
repeats itself reads as stale), items they hid, and items they already engaged with. Types whose
repeats are worth a second look (a job still open) are not in ``item_types``; ``impression_discount``
lowers those instead of dropping them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from feedrank.contracts import ItemType
from rankers.rules.base import RerankContext, Slot

ITEM_TYPES = tuple(t.value for t in ItemType)


@dataclass
class SeenFilter:
    item_types: Iterable[str] = ("post",)
    drop_hidden: bool = True
    drop_engaged: bool = True
    name: str = "seen"

    def __post_init__(self) -> None:
        if isinstance(self.item_types, str) or not isinstance(self.item_types, Iterable):
            raise ValueError(f"seen.item_types must be a list of item types, got {self.item_types!r}")
        self.item_types = tuple(self.item_types)
        unknown = [t for t in self.item_types if t not in ITEM_TYPES]
        if unknown:
            raise ValueError(f"seen.item_types has unknown types {unknown}; known: {list(ITEM_TYPES)}")
        for param in ("drop_hidden", "drop_engaged"):
            if not isinstance(getattr(self, param), bool):
                raise ValueError(f"seen.{param} must be true or false, got {getattr(self, param)!r}")

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        return [s for s in slots if not self._seen(s)]

    def _seen(self, s: Slot) -> bool:
        return (
            (s.item_type in self.item_types and s.impressions > 0)
            or (self.drop_hidden and s.hidden)
            or (self.drop_engaged and s.engagements > 0)
        )
