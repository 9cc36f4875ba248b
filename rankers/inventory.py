"""An in-memory view of the network and its inventories, folded from ``member-events``.

Each FPR service keeps its own copy (built by replaying the topic), so that teams never share state.
Pure logic: no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from feedrank.contracts import CREATION_TYPES, ENGAGEMENT_TYPES, EventType, ItemType, MemberEvent


@dataclass(slots=True)
class Item:
    item_id: str
    item_type: ItemType
    actor_id: str
    created_at: float
    skills: frozenset[str] = frozenset()
    visibility: str = "public"
    impressions: int = 0
    engagements: int = 0


@dataclass(slots=True)
class Profile:
    member_id: str
    skills: frozenset[str] = frozenset()
    industry: str = ""


@dataclass
class Inventory:
    members: dict[str, Profile] = field(default_factory=dict)
    connections: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    follows: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    blocks: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    items: dict[str, Item] = field(default_factory=dict)
    by_actor: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    by_type: defaultdict[ItemType, list[str]] = field(default_factory=lambda: defaultdict(list))
    seen: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    events_applied: int = 0

    def apply(self, e: MemberEvent) -> None:
        self.events_applied += 1
        et = e.event_type
        if et == EventType.MEMBER_JOINED:
            self.members[e.member_id] = Profile(e.member_id, _skills(e), str(e.attributes.get("industry", "")))
        elif et == EventType.CONNECTION_MADE:
            assert e.item_id is not None
            self.connections[e.member_id].add(e.item_id)
            self.connections[e.item_id].add(e.member_id)
        elif et == EventType.FOLLOW:
            assert e.item_id is not None
            self.follows[e.member_id].add(e.item_id)
        elif et == EventType.BLOCK:
            assert e.item_id is not None
            self.blocks[e.member_id].add(e.item_id)
        elif et in CREATION_TYPES:
            assert e.item_id is not None and e.item_type is not None
            if e.item_id in self.items:
                return  # a replayed creation is not a new item
            item = Item(
                e.item_id,
                e.item_type,
                e.member_id,
                e.timestamp,
                _skills(e),
                str(e.attributes.get("visibility", "public")),
            )
            self.items[e.item_id] = item
            self.by_actor[e.member_id].append(e.item_id)
            self.by_type[e.item_type].append(e.item_id)
        elif e.item_id is not None:
            item = self.items.get(e.item_id)
            if et == EventType.IMPRESSION:
                self.seen[e.member_id].add(e.item_id)
                if item:
                    item.impressions += 1
            elif et in ENGAGEMENT_TYPES and item:
                item.engagements += 1

    def is_blocked(self, member_id: str, actor_id: str) -> bool:
        """Either side's block hides the other's content."""
        return actor_id in self.blocks.get(member_id, ()) or member_id in self.blocks.get(actor_id, ())

    def can_see(self, member_id: str, item: Item) -> bool:
        if item.actor_id == member_id or self.is_blocked(member_id, item.actor_id):
            return False
        if item.visibility == "connections":
            return item.actor_id in self.connections.get(member_id, ())
        return True

    def profile(self, member_id: str) -> Profile:
        return self.members.get(member_id) or Profile(member_id)


def _skills(e: MemberEvent) -> frozenset[str]:
    raw = e.attributes.get("skills", [])
    return frozenset(raw) if isinstance(raw, list) else frozenset()
