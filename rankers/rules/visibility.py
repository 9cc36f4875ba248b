"""Drop what the member must not see: items by members on either side of a block, connections-only
posts from members who are not connections, and the member's own items and card. The FPRs filter
most of this at retrieval, but inventories lag the graph (a block made a minute ago), and a feed that
shows a blocked member's post once is a trust problem no ranking gain pays for.

The rule fails closed: only ``public`` items, and ``connections`` items of a connection, pass. An item
the mixer's catalog does not know (``UNVERIFIED``: it was created after the catalog's last event, or
it does not exist) is dropped, since nothing but the FPR vouches for its actor or visibility; so is
any visibility the rule does not know."""

from __future__ import annotations

from dataclasses import dataclass

from feedrank.contracts import CONNECTIONS, PUBLIC
from rankers.rules.base import RerankContext, Slot


@dataclass
class Visibility:
    name: str = "visibility"

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        return [s for s in slots if self._visible(s, ctx)]

    @staticmethod
    def _visible(s: Slot, ctx: RerankContext) -> bool:
        member, graph = ctx.member_id, ctx.graph
        if s.actor_id == member or graph.is_blocked(member, s.actor_id):
            return False
        # A member card's subject is its item_id (the people FPR sets actor_id to the same member).
        if s.item_type == "member" and s.item_id != s.actor_id:
            if s.item_id == member or graph.is_blocked(member, s.item_id):
                return False
        if s.visibility == PUBLIC:
            return True
        return s.visibility == CONNECTIONS and graph.is_connected(member, s.actor_id)
