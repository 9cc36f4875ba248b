"""Cold-start candidate sources: what an FPR offers a member it knows nothing about.

A member with no connections, no profile or no history still gets a sensible list: the most engaged
items they may see (recent ones first among equals), or the best-connected members for people you
may know. Never an error, never an empty feed while the inventory has anything visible.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from feedrank.contracts import ItemType
from rankers.inventory import Inventory


@dataclass
class PopularItems:
    item_type: ItemType
    limit: int = 300
    max_age_hours: float | None = None

    def candidates(self, inv: Inventory, member_id: str, now: float) -> list[str]:
        seen = inv.seen.get(member_id, set())
        oldest = now - self.max_age_hours * 3600 if self.max_age_hours is not None else float("-inf")
        pool = (
            inv.items[i]
            for i in inv.by_type.get(self.item_type, ())
            if i not in seen and inv.items[i].created_at >= oldest and inv.items[i].created_at <= now
        )
        visible = (it for it in pool if inv.can_see(member_id, it))
        best = heapq.nlargest(self.limit, visible, key=lambda it: (it.engagements, it.created_at, it.item_id))
        return [it.item_id for it in best]


@dataclass
class PopularMembers:
    """The best-connected members, never the member, an existing connection or anyone blocked."""

    limit: int = 300

    def candidates(self, inv: Inventory, member_id: str, now: float) -> list[str]:
        mine = inv.connections.get(member_id, set())
        pool = (m for m in inv.members if m != member_id and m not in mine and not inv.is_blocked(member_id, m))
        return heapq.nlargest(self.limit, pool, key=lambda m: (len(inv.connections.get(m, ())), m))
