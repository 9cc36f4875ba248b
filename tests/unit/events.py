"""Test events, built one way for every unit test."""

from __future__ import annotations

from feedrank.contracts import EventType, ItemType, MemberEvent


def response(
    kind: EventType | str,
    ts: float,
    member: str = "m1",
    item: str = "p1",
    actor: str = "m2",
    item_type: ItemType = ItemType.POST,
) -> MemberEvent:
    """A member's response (impression, click, hide...) to an item."""
    return MemberEvent(
        event_id=f"{kind}-{member}-{item}-{ts}",
        event_type=kind,
        member_id=member,
        timestamp=ts,
        item_id=item,
        item_type=item_type,
        item_actor_id=actor,
    )
