"""The re-ranking rule contract: a small, pure transformation of the scored slate.

A rule takes the slots in rank order and returns them in its new order, possibly fewer. Everything a
rule may look at is on the slot (what the mixer knows of the item and of the member's history with it)
or in the context (the request, and the member's place in the graph). Rules never do I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from feedrank.contracts import PUBLIC

UNVERIFIED = "unverified"  # nothing vouches for the item's actor or visibility: nobody may see it


@dataclass
class Slot:
    """A candidate on its way into the feed.

    ``score`` is what the slate is ordered by: the SPR's pCTR at the top of the feed, which rules may
    discount; ``pctr`` is the SPR's estimate itself, never changed by a rule; ``fpr_score`` is the
    proposing FPR's score. ``moved_by`` records
    which rules moved the slot (for ``feedrank explain``); ``pinned`` marks a slot a rule fixed at its
    position (exploration leaves it there); ``propensity`` is the probability that the mixer's policy
    puts this item at the position it ends at (1 unless exploration is on).
    """

    item_id: str
    item_type: str
    actor_id: str
    source: str
    score: float
    pctr: float = 0.0
    fpr_score: float = math.nan  # the proposing FPR's score (its own order of its inventory)
    created_at: float | None = None  # None when the mixer has not seen the item created (member cards)
    visibility: str = PUBLIC  # PUBLIC, CONNECTIONS, or UNVERIFIED (the mixer's catalog does not know the item)
    impressions: float = 0.0  # the member's earlier impressions of this item (X_io)
    engagements: float = 0.0  # the member's earlier engagements with this item
    hidden: bool = False  # the member hid this item before
    served_at: float | None = None  # when the mixer last served this item to the member
    propensity: float = 1.0
    pinned: bool = False
    moved_by: list[str] = field(default_factory=list)


class Graph(Protocol):
    """The member's place in the network, as the mixer's inventory knows it."""

    def is_blocked(self, member_id: str, actor_id: str) -> bool:
        """Either side blocked the other."""
        ...

    def is_connected(self, member_id: str, actor_id: str) -> bool: ...


class NoGraph:
    """A graph with no edges: nothing blocked, nobody connected (connections-only posts never pass)."""

    def is_blocked(self, member_id: str, actor_id: str) -> bool:
        return False

    def is_connected(self, member_id: str, actor_id: str) -> bool:
        return False


@dataclass(frozen=True)
class RerankContext:
    member_id: str
    feed_size: int
    now: float = 0.0  # the request's time (epoch seconds): freshness and served windows count from it
    request_id: str = ""  # seeds exploration, so a request's feed can be reproduced and explained
    graph: Graph = field(default_factory=NoGraph)


class RerankRule(Protocol):
    name: str

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        """Take slots in rank order; return them in the new rank order (possibly fewer)."""
        ...


def resorted(slots: list[Slot], rule: str) -> list[Slot]:
    """The slots re-ordered by their (changed) scores, stably; ``rule`` is recorded on each slot that
    moved, for the rules that discount scores."""
    order = sorted(range(len(slots)), key=lambda i: -slots[i].score)  # stable: ties keep their order
    for rank, i in enumerate(order):
        if rank != i:
            slots[i].moved_by.append(rule)
    return [slots[i] for i in order]
