"""The re-ranking rule contract: a small, pure transformation of the scored slate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Slot:
    """A candidate on its way into the feed; ``moved_by`` records which rules touched it (for explain)."""

    item_id: str
    item_type: str
    actor_id: str
    source: str
    score: float
    moved_by: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RerankContext:
    member_id: str
    feed_size: int


class RerankRule(Protocol):
    name: str

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        """Take slots in rank order; return them in the new rank order (possibly fewer)."""
        ...
