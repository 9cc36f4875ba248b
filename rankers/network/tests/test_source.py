"""FollowFeedSource: only posts the member may see, from their own network, recent and not yet shown."""

from __future__ import annotations

import itertools

import pytest

from feedrank.contracts import EventType, ItemType, MemberEvent
from rankers.cold_start import PopularItems
from rankers.inventory import Inventory
from rankers.network.ranker import FollowFeedSource, build

NOW = 1_767_225_600.0 + 30 * 86_400
_ids = itertools.count()


def ev(event_type: EventType, member_id: str, ts: float = NOW - 3600, **kw: object) -> MemberEvent:
    return MemberEvent(event_id=f"e{next(_ids)}", event_type=event_type, member_id=member_id, timestamp=ts, **kw)


def post(inv: Inventory, pid: str, author: str, ts: float = NOW - 3600, visibility: str = "public") -> None:
    inv.apply(
        ev(
            EventType.POST_CREATED,
            author,
            ts,
            item_id=pid,
            item_type=ItemType.POST,
            attributes={"visibility": visibility, "skills": ["python"]},
        )
    )


def edge(inv: Inventory, kind: EventType, a: str, b: str) -> None:
    inv.apply(ev(kind, a, NOW - 86_400 * 20, item_id=b, item_type=ItemType.MEMBER))


@pytest.fixture
def inv() -> Inventory:
    inv = Inventory()
    for m in ("me", "friend", "friend2", "idol", "stranger", "blocker", "blocked"):
        inv.apply(ev(EventType.MEMBER_JOINED, m, NOW - 86_400 * 30, attributes={"skills": ["python"]}))
    for other in ("friend", "friend2", "blocker", "blocked"):
        edge(inv, EventType.CONNECTION_MADE, "me", other)
    edge(inv, EventType.FOLLOW, "me", "idol")
    edge(inv, EventType.FOLLOW, "me", "co1")
    edge(inv, EventType.BLOCK, "blocker", "me")  # they blocked me
    edge(inv, EventType.BLOCK, "me", "blocked")  # I blocked them
    post(inv, "p_friend", "friend")
    post(inv, "p_friend_conn", "friend", visibility="connections")
    post(inv, "p_idol", "idol")
    post(inv, "p_idol_conn", "idol", visibility="connections")  # followed, not connected
    post(inv, "p_stranger", "stranger")
    post(inv, "p_blocker", "blocker")
    post(inv, "p_blocked", "blocked")
    post(inv, "p_old", "friend2", ts=NOW - 15 * 86_400)
    post(inv, "p_future", "friend2", ts=NOW + 60)
    post(inv, "p_mine", "me")
    inv.apply(ev(EventType.JOB_POSTED, "co1", item_id="j1", item_type=ItemType.JOB, attributes={"skills": ["python"]}))
    return inv


def test_source_respects_visibility_blocks_age_and_type(inv: Inventory) -> None:
    ids = FollowFeedSource(max_age_hours=14 * 24).candidates(inv, "me", NOW)
    assert sorted(ids) == ["p_friend", "p_friend_conn", "p_idol"]
    assert len(ids) == len(set(ids))


def test_source_age_limit_and_seen_are_settings(inv: Inventory) -> None:
    assert "p_old" in FollowFeedSource(max_age_hours=16 * 24).candidates(inv, "me", NOW)
    inv.apply(
        MemberEvent(
            event_id="imp1",
            event_type=EventType.IMPRESSION,
            member_id="me",
            timestamp=NOW - 60,
            item_id="p_friend",
            item_type=ItemType.POST,
            item_actor_id="friend",
        )
    )
    assert "p_friend" not in FollowFeedSource().candidates(inv, "me", NOW)
    assert "p_friend" in FollowFeedSource(exclude_seen=False).candidates(inv, "me", NOW)


def test_source_keeps_the_newest_posts_of_a_large_network(inv: Inventory) -> None:
    for i in range(10):
        post(inv, f"p_new{i}", "friend2", ts=NOW - 600 + i)
    ids = FollowFeedSource(max_candidates=4).candidates(inv, "me", NOW)
    assert sorted(ids) == ["p_new6", "p_new7", "p_new8", "p_new9"]


def test_build_reads_config_and_lets_params_override() -> None:
    default = build()
    assert isinstance(default.source, FollowFeedSource)
    assert default.source.max_age_hours == 336.0 and default.serves == ItemType.POST
    assert isinstance(default.cold_start, PopularItems) and default.cold_start.item_type == ItemType.POST
    custom = build(k=7, max_age_hours=2.0, source={"per_actor": 3})
    assert custom.k == 7 and custom.source.max_age_hours == 2.0 and custom.source.per_actor == 3
    assert custom.scorer.version == "recency"  # no model yet: the baseline serves


def test_unknown_member_gets_popular_visible_posts(inv: Inventory) -> None:
    out = build().top_k(inv, "newcomer", NOW, k=10)
    ids = [c.item_id for c in out]
    assert ids and all(c.item_type == ItemType.POST for c in out)
    assert "p_idol_conn" not in ids and "p_friend_conn" not in ids  # connections-only stays private
    assert "p_future" not in ids
