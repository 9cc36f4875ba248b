import time

import pytest

from feedrank.contracts import EventType, ItemType, MemberEvent
from feedrank.settings import REPO_ROOT
from rankers.courses.ranker import build as build_courses
from rankers.inventory import Inventory
from rankers.jobs.ranker import build as build_jobs
from rankers.network.ranker import build as build_network
from rankers.people.ranker import build as build_people
from rankers.registry import load_config

NOW = time.time()
_n = iter(range(10**6))


def ev(event_type, member_id, **kw):
    return MemberEvent(
        event_id=f"e{next(_n)}", event_type=event_type, member_id=member_id, timestamp=kw.pop("ts", NOW - 3600), **kw
    )


def world() -> Inventory:
    inv = Inventory()
    for mid, skills in {
        "m1": ["python", "sql"],
        "m2": ["python"],
        "m3": ["sales"],
        "m4": ["python", "sql"],
        "m5": ["sql"],
        "m6": ["python"],
    }.items():
        inv.apply(ev(EventType.MEMBER_JOINED, mid, attributes={"skills": skills}))
    for a, b in [("m1", "m2"), ("m1", "m3"), ("m2", "m4"), ("m3", "m4"), ("m2", "m5"), ("m3", "m6")]:
        inv.apply(ev(EventType.CONNECTION_MADE, a, item_id=b, item_type=ItemType.MEMBER))
    inv.apply(ev(EventType.BLOCK, "m1", item_id="m6", item_type=ItemType.MEMBER))
    posts = [
        ("p1", "m2", "public", ["python"]),
        ("p2", "m3", "connections", ["sales"]),
        ("p3", "m4", "public", ["python"]),
        ("p4", "m5", "connections", ["sql"]),
    ]
    for pid, author, vis, skills in posts:
        inv.apply(
            ev(
                EventType.POST_CREATED,
                author,
                item_id=pid,
                item_type=ItemType.POST,
                attributes={"visibility": vis, "skills": skills},
            )
        )
    inv.apply(
        ev(EventType.JOB_POSTED, "co1", item_id="j1", item_type=ItemType.JOB, attributes={"skills": ["python", "sql"]})
    )
    inv.apply(ev(EventType.JOB_POSTED, "co2", item_id="j2", item_type=ItemType.JOB, attributes={"skills": ["sales"]}))
    inv.apply(
        ev(
            EventType.COURSE_PUBLISHED,
            "learning",
            item_id="c1",
            item_type=ItemType.COURSE,
            attributes={"skills": ["python", "ml"]},
        )
    )
    inv.apply(
        ev(
            EventType.COURSE_PUBLISHED,
            "learning",
            item_id="c2",
            item_type=ItemType.COURSE,
            attributes={"skills": ["nursing"]},
        )
    )
    return inv


def test_network_shows_connections_posts_respecting_visibility():
    inv = world()
    ids = [c.item_id for c in build_network().top_k(inv, "m1", NOW)]
    # p1 (connection m2), p2 (connections-only by connection m3): visible; p3/p4 by non-connections: not.
    assert set(ids) == {"p1", "p2"}
    # A connections-only post never reaches a non-connection, even one who follows the author.
    inv.apply(ev(EventType.FOLLOW, "m6", item_id="m5", item_type=ItemType.MEMBER))
    assert "p4" not in [c.item_id for c in build_network().top_k(inv, "m6", NOW)]


def test_network_hides_blocked_authors():
    inv = world()
    inv.apply(ev(EventType.BLOCK, "m2", item_id="m1", item_type=ItemType.MEMBER))  # m2 blocks m1
    assert "p1" not in [c.item_id for c in build_network().top_k(inv, "m1", NOW)]


def test_jobs_offer_visible_open_jobs_with_probability_scores():
    cands = build_jobs().top_k(world(), "m1", NOW)
    assert {c.item_id for c in cands} == {"j1", "j2"}
    assert all(0 <= c.score <= 1 for c in cands) and all(c.item_type == ItemType.JOB for c in cands)


def test_courses_skip_seen():
    inv = world()
    assert {c.item_id for c in build_courses().top_k(inv, "m1", NOW)} == {"c1", "c2"}
    inv.apply(ev(EventType.IMPRESSION, "m1", item_id="c1", item_type=ItemType.COURSE, item_actor_id="learning"))
    assert "c1" not in [c.item_id for c in build_courses().top_k(inv, "m1", NOW)]


def test_people_never_returns_self_connections_or_blocked():
    inv = world()
    ids = [c.item_id for c in build_people().top_k(inv, "m1", NOW)]
    assert "m1" not in ids and "m2" not in ids and "m3" not in ids
    assert "m6" not in ids  # friend of friend, but blocked by m1
    assert ids[0] == "m4"  # two common connections beats one
    assert set(ids) == {"m4", "m5"}


def test_top_k_truncates():
    assert len(build_jobs(k=1).top_k(world(), "m1", NOW)) == 1


@pytest.mark.parametrize("name", ["network", "jobs", "courses", "people"])
def test_every_configured_fpr_answers_a_stranger_with_a_cold_start_list(name):
    spec = load_config(REPO_ROOT / "config" / "pipeline.toml").fprs[name]
    got = spec.build().top_k(world(), "never-seen-before", NOW)
    assert got, f"{name} gave a stranger nothing"
    assert all(0 <= c.score <= 1 for c in got) and len({c.item_id for c in got}) == len(got)
    assert all(c.item_type == spec.serves for c in got)
