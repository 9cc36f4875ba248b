"""Put one inventory's best item at a fixed position, e.g. a people-you-may-know module as the third
card: product wants the module where members learn to find it, not wherever its score lands it. The
slot is pinned there, so exploration does not move it; with ``exclusive`` the inventory's other items
are removed (the module stands for them)."""

from __future__ import annotations

from dataclasses import dataclass

from rankers.rules.base import RerankContext, Slot


@dataclass
class FixedPosition:
    source: str = "people"
    position: int = 2
    exclusive: bool = True
    name: str = "fixed_position"

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"fixed_position.source must be an FPR name, got {self.source!r}")
        if isinstance(self.position, bool) or not isinstance(self.position, int) or self.position < 0:
            raise ValueError(f"fixed_position.position must be an integer >= 0, got {self.position!r}")
        if not isinstance(self.exclusive, bool):
            raise ValueError(f"fixed_position.exclusive must be true or false, got {self.exclusive!r}")

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        first = next((i for i, s in enumerate(slots) if s.source == self.source), None)
        if first is None:
            return slots
        best = slots[first]  # slots come in rank order: the first of the inventory is its best
        keep = [i for i, s in enumerate(slots) if i != first and not (self.exclusive and s.source == self.source)]
        was = sum(1 for i in keep if i < first)  # its rank among the slots kept
        rest = [slots[i] for i in keep]
        at = min(self.position, len(rest))
        rest.insert(at, best)
        best.pinned = True
        if at != was:
            best.moved_by.append(self.name)
        return rest
