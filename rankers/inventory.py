"""An in-memory view of the network and its inventories, folded from ``member-events``.

Each FPR service keeps its own copy (built by replaying the topic), so that teams never share state.
Training replays the same events through the same ``apply``, so a model's features are computed the
same way offline and online. Pure logic: no I/O.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from feedrank.contracts import CONNECTIONS, CREATION_TYPES, ENGAGEMENT_TYPES, PUBLIC, EventType, ItemType, MemberEvent


@dataclass(slots=True)
class Item:
    item_id: str
    item_type: ItemType
    actor_id: str
    created_at: float
    skills: frozenset[str] = frozenset()
    visibility: str = PUBLIC
    title: str = ""
    description: str = ""
    seniority: str = ""
    location: str = ""
    difficulty: str = ""
    category: str = ""
    impressions: int = 0
    engagements: int = 0
    last_engaged_at: float = 0.0
    # First impressions only (one per member) and the engagements that followed them: the rate of an
    # item shown to someone new, which repeated impressions (and their fatigue) do not drag down.
    viewers: int = 0
    first_engagements: int = 0

    @property
    def text(self) -> str:
        """What a text model reads: title, description, skills and the structured fields, as words."""
        parts = [self.title, self.description, " ".join(sorted(self.skills)), self.seniority, self.location]
        return " ".join(p for p in (*parts, self.difficulty, self.category) if p)


@dataclass(slots=True)
class Profile:
    member_id: str
    skills: frozenset[str] = frozenset()
    industry: str = ""
    seniority: str = ""
    location: str = ""
    joined_at: float = 0.0

    @property
    def text(self) -> str:
        parts = [" ".join(sorted(self.skills)), self.industry, self.seniority, self.location]
        return " ".join(p for p in parts if p)


@dataclass(frozen=True, slots=True)
class Interaction:
    """One engagement of a member with an item, in the member's history."""

    timestamp: float
    event_type: EventType
    item_id: str
    item_type: ItemType


@dataclass
class Inventory:
    members: dict[str, Profile] = field(default_factory=dict)
    connections: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    follows: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    followers: Counter[str] = field(default_factory=Counter)
    blocks: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    items: dict[str, Item] = field(default_factory=dict)
    by_actor: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    by_type: defaultdict[ItemType, list[str]] = field(default_factory=lambda: defaultdict(list))
    seen: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    seen_again: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # shown 2+ times
    # Engagement histories and counters, for tie strength, affinities and sessions.
    history: defaultdict[str, list[Interaction]] = field(default_factory=lambda: defaultdict(list))
    actor_engagements: Counter[str] = field(default_factory=Counter)
    actor_impressions: Counter[str] = field(default_factory=Counter)
    pair_engagements: Counter[tuple[str, str]] = field(default_factory=Counter)  # (member, actor)
    type_engagements: defaultdict[str, Counter[ItemType]] = field(default_factory=lambda: defaultdict(Counter))
    type_impressions: defaultdict[str, Counter[ItemType]] = field(default_factory=lambda: defaultdict(Counter))
    events_applied: int = 0
    latest: float = 0.0

    def apply(self, e: MemberEvent) -> None:
        self.events_applied += 1
        self.latest = max(self.latest, e.timestamp)
        et = e.event_type
        if et == EventType.MEMBER_JOINED:
            a = e.attributes
            self.members[e.member_id] = Profile(
                e.member_id,
                _skills(e),
                str(a.get("industry", "")),
                str(a.get("seniority", "")),
                str(a.get("location", "")),
                e.timestamp,
            )
        elif et == EventType.CONNECTION_MADE:
            assert e.item_id is not None
            self.connections[e.member_id].add(e.item_id)
            self.connections[e.item_id].add(e.member_id)
        elif et == EventType.FOLLOW:
            assert e.item_id is not None
            if e.item_id not in self.follows[e.member_id]:
                self.follows[e.member_id].add(e.item_id)
                self.followers[e.item_id] += 1
        elif et == EventType.BLOCK:
            assert e.item_id is not None
            self.blocks[e.member_id].add(e.item_id)
        elif et in CREATION_TYPES:
            assert e.item_id is not None and e.item_type is not None
            if e.item_id in self.items:
                return  # a replayed creation is not a new item
            a = e.attributes
            item = Item(
                e.item_id,
                e.item_type,
                e.member_id,
                e.timestamp,
                _skills(e),
                str(a.get("visibility", PUBLIC)),
                str(a.get("title", "")),
                str(a.get("description", "")),
                str(a.get("seniority", "")),
                str(a.get("location", "")),
                str(a.get("difficulty", "")),
                str(a.get("category", "")),
            )
            self.items[e.item_id] = item
            self.by_actor[e.member_id].append(e.item_id)
            self.by_type[e.item_type].append(e.item_id)
        elif e.item_id is not None:
            self._respond(e)

    def _respond(self, e: MemberEvent) -> None:
        assert e.item_id is not None
        item = self.items.get(e.item_id)
        actor = e.item_actor_id or (item.actor_id if item else None)
        itype = e.item_type or (item.item_type if item else None)
        if e.event_type == EventType.IMPRESSION:
            seen = self.seen[e.member_id]
            if e.item_id in seen:
                self.seen_again[e.member_id].add(e.item_id)
            else:
                seen.add(e.item_id)
                if item:
                    item.viewers += 1
            if item:
                item.impressions += 1
            if actor:
                self.actor_impressions[actor] += 1
            if itype:
                self.type_impressions[e.member_id][itype] += 1
        elif e.event_type in ENGAGEMENT_TYPES:
            if item:
                item.engagements += 1
                item.last_engaged_at = max(item.last_engaged_at, e.timestamp)
                if self.after_first_impression(e.member_id, e.item_id):
                    item.first_engagements += 1
            if actor:
                self.actor_engagements[actor] += 1
                self.pair_engagements[(e.member_id, actor)] += 1
            if itype:
                self.type_engagements[e.member_id][itype] += 1
                self.history[e.member_id].append(Interaction(e.timestamp, e.event_type, e.item_id, itype))

    def after_first_impression(self, member_id: str, item_id: str) -> bool:
        """The member has been shown the item exactly once."""
        return item_id in self.seen.get(member_id, ()) and item_id not in self.seen_again.get(member_id, ())

    def is_blocked(self, member_id: str, actor_id: str) -> bool:
        """Either side's block hides the other's content."""
        return actor_id in self.blocks.get(member_id, ()) or member_id in self.blocks.get(actor_id, ())

    def is_connected(self, member_id: str, other_id: str) -> bool:
        return other_id in self.connections.get(member_id, ())

    def can_see(self, member_id: str, item: Item) -> bool:
        if item.actor_id == member_id or self.is_blocked(member_id, item.actor_id):
            return False
        if item.visibility == CONNECTIONS:
            return item.actor_id in self.connections.get(member_id, ())
        return True

    def profile(self, member_id: str) -> Profile:
        return self.members.get(member_id) or Profile(member_id)

    def engaged_items(self, member_id: str, item_type: ItemType | None = None) -> list[str]:
        """Items the member engaged with, oldest first (a session for item2vec-style models)."""
        return [i.item_id for i in self.history.get(member_id, ()) if item_type is None or i.item_type == item_type]


def _skills(e: MemberEvent) -> frozenset[str]:
    raw = e.attributes.get("skills", [])
    return frozenset(raw) if isinstance(raw, list) else frozenset()
