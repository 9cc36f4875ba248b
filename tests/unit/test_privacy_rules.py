"""Privacy in the mixer's pure logic: what the visibility rule lets through, and what the mixer tells it.

The FPRs filter blocks and connections-only posts at retrieval, but the mixer is the last line: these
tests give it candidates an FPR should never have proposed (from an inventory that lags the mixer's,
or one that mislabels what it proposes) and check that none reaches the feed.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedrank.contracts import CONNECTIONS, PUBLIC, EventType, ItemType, MemberEvent
from feedrank.settings import REPO_ROOT
from rankers.inventory import Inventory
from rankers.mixer.mixer import CANDIDATE_COLUMNS, FeedMixer
from rankers.mixer.spr import SecondPassRanker
from rankers.registry import load_config
from rankers.rules.base import UNVERIFIED, RerankContext, Slot
from rankers.rules.dedupe import Dedupe
from rankers.rules.visibility import Visibility

NOW = time.time()
SHIPPED_RULES = load_config(REPO_ROOT / "config" / "pipeline.toml").build_rules
_n = iter(range(10**9))


def ev(kind: EventType, member: str, ts: float = NOW - 9000, **kw) -> MemberEvent:
    return MemberEvent(event_id=f"e{next(_n)}", event_type=kind, member_id=member, timestamp=ts, **kw)


def edge(kind: EventType, a: str, b: str) -> MemberEvent:
    return ev(kind, a, item_id=b, item_type=ItemType.MEMBER)


def created(item_id: str, actor: str, item_type: ItemType = ItemType.POST, visibility: str = PUBLIC) -> MemberEvent:
    kind = {ItemType.POST: EventType.POST_CREATED, ItemType.JOB: EventType.JOB_POSTED}[item_type]
    return ev(kind, actor, NOW - 3600, item_id=item_id, item_type=item_type, attributes={"visibility": visibility})


@pytest.fixture(scope="module")
def model() -> SecondPassRanker:
    """A second pass fitted on random rows: the privacy rules do not depend on what it learned."""
    rng = np.random.default_rng(0)
    n = 400
    sources = np.array(["network", "jobs", "courses", "people"])[rng.integers(0, 4, n)]
    types = pd.Series(sources).map({"network": "post", "jobs": "job", "courses": "course", "people": "member"})
    rows = pd.DataFrame({"source": sources, "item_type": types, "fpr_score": rng.random(n)})
    return SecondPassRanker().fit(rows, rng.integers(0, 2, n))


def catalog() -> Inventory:
    """m1's world: connected to friend, blocked spammer, blocked by grudge; a post by each, and a job."""
    inv = Inventory()
    for m in ("m1", "friend", "spammer", "grudge", "stranger"):
        inv.apply(ev(EventType.MEMBER_JOINED, m))
    inv.apply(edge(EventType.CONNECTION_MADE, "m1", "friend"))
    inv.apply(edge(EventType.BLOCK, "m1", "spammer"))
    inv.apply(edge(EventType.BLOCK, "grudge", "m1"))
    for e in (
        created("p_friend", "friend", visibility=CONNECTIONS),
        created("p_spam", "spammer"),
        created("p_grudge", "grudge"),
        created("p_private", "stranger", visibility=CONNECTIONS),
        created("p_public", "stranger"),
        created("p_own", "m1"),
        created("j1", "co1", ItemType.JOB),
    ):
        inv.apply(e)
    return inv


def mix(model: SecondPassRanker, rows: list[tuple], rules=None, inv=None, member: str = "m1"):
    # rows name the candidate's fields up to its FPR score; the FPR's model age is not known
    cands = pd.DataFrame(rows, columns=CANDIDATE_COLUMNS[: len(rows[0])] if rows else CANDIDATE_COLUMNS)
    mixer = FeedMixer(model, rules if rules is not None else [Dedupe(), Visibility()])
    return mixer.mix("r1", member, 10, NOW, cands, pd.DataFrame(index=range(len(cands))), inv or catalog())


# --- the rule alone -------------------------------------------------------------------------------------


class Graph:
    def __init__(self, blocks=(), edges=()):
        self.blocks, self.edges = set(blocks), {frozenset(e) for e in edges}

    def is_blocked(self, member_id, actor_id):
        return (member_id, actor_id) in self.blocks or (actor_id, member_id) in self.blocks

    def is_connected(self, member_id, actor_id):
        return frozenset((member_id, actor_id)) in self.edges


def test_visibility_fails_closed_on_unverified_and_unknown_visibilities():
    ctx = RerankContext("m1", 10, graph=Graph(edges=[("m1", "friend")]))
    s = [
        Slot("p1", "post", "friend", "network", 0.9, visibility=UNVERIFIED),  # even from a connection
        Slot("p2", "post", "stranger", "network", 0.8, visibility=UNVERIFIED),
        Slot("p3", "post", "friend", "network", 0.7, visibility="Connections"),  # not a visibility it knows
        Slot("p4", "post", "stranger", "network", 0.6, visibility="private"),
        Slot("p5", "post", "friend", "network", 0.5, visibility=CONNECTIONS),
        Slot("p6", "post", "stranger", "network", 0.4, visibility=PUBLIC),
    ]
    assert [x.item_id for x in Visibility().apply(s, ctx)] == ["p5", "p6"]


def test_visibility_checks_a_member_cards_subject_and_its_actor():
    ctx = RerankContext("m1", 10, graph=Graph(blocks=[("m1", "spammer"), ("grudge", "m1")]))
    s = [
        Slot("spammer", "member", "someone", "people", 0.9),  # subject blocked by the member, actor mislabelled
        Slot("grudge", "member", "someone", "people", 0.8),  # subject blocked the member
        Slot("m1", "member", "someone", "people", 0.7),  # the member's own card
        Slot("someone", "member", "spammer", "people", 0.6),  # a card whose actor is blocked
        Slot("someone", "member", "someone", "people", 0.5),
    ]
    assert [(x.item_id, x.actor_id) for x in Visibility().apply(s, ctx)] == [("someone", "someone")]


# --- what the mixer tells the rule ------------------------------------------------------------------------


def test_items_the_catalog_does_not_know_are_dropped_even_from_connections(model):
    """The mixer's catalog lags the FPR's inventory: a post it has not seen created could be
    connections-only, so it does not pass (it did, as public, before)."""
    result = mix(
        model,
        [
            ("p_new", "post", "friend", "network", 0.9),  # created after the catalog's last event
            ("p_new2", "post", "stranger", "network", 0.9),
            ("j_new", "job", "co1", "jobs", 0.9),  # jobs can be connections-only too
            ("friend", "member", "friend", "people", 0.5),  # a card of a known member: public
            ("p_public", "post", "stranger", "network", 0.4),
        ],
    )
    assert {s.item_id for s in result.slots} == {"friend", "p_public"}
    assert result.dropped == {"p_new": "visibility", "p_new2": "visibility", "j_new": "visibility"}


def test_a_card_label_does_not_pass_what_is_not_a_known_member(model):
    """Only ids of members the catalog knows are cards; a post labelled as a card, or a blocked
    member's card labelled as a post, does not get past the rule."""
    result = mix(
        model,
        [
            ("p_unseen", "member", "p_unseen", "people", 0.9),  # an unknown post passed off as a card
            ("nobody", "member", "nobody", "people", 0.9),  # no such member (yet)
            ("spammer", "post", "friend", "network", 0.9),  # a blocked member's card passed off as a post
            ("stranger", "member", "stranger", "people", 0.5),
        ],
    )
    assert [s.item_id for s in result.slots] == ["stranger"]
    assert set(result.dropped) == {"p_unseen", "nobody", "spammer"}


@pytest.mark.parametrize(
    "item_id",
    [
        "p_spam",  # by a member m1 blocked
        "p_grudge",  # by a member who blocked m1
        "p_private",  # connections-only, by a non-connection
        "p_own",  # m1's own post
    ],
)
def test_an_fpr_cannot_relabel_the_actor_of_a_post_past_the_rule(model, item_id):
    """The catalog's author counts, not the one in the FPR's answer (it used to be the FPR's)."""
    result = mix(model, [(item_id, "post", "friend", "network", 0.9), ("p_public", "post", "stranger", "network", 0.1)])
    assert [s.item_id for s in result.slots] == ["p_public"]
    assert result.dropped == {item_id: "visibility"}


def test_the_feed_names_the_catalogs_actor(model):
    result = mix(model, [("p_public", "post", "spammer", "network", 0.9), ("p_friend", "post", "m1", "network", 0.8)])
    # a public post by a stranger is not hidden by a wrong label naming a blocked member (or the member)
    assert {(s.item_id, s.actor_id) for s in result.slots} == {("p_public", "stranger"), ("p_friend", "friend")}
    assert result.dropped == {}


# --- a property over random worlds and lying FPRs --------------------------------------------------------

MEMBERS = [f"m{i}" for i in range(6)]
pairs = st.tuples(st.sampled_from(MEMBERS), st.sampled_from(MEMBERS)).filter(lambda p: p[0] != p[1])
posts = st.lists(st.tuples(st.sampled_from(MEMBERS), st.sampled_from([PUBLIC, CONNECTIONS])), min_size=1, max_size=12)
labels = st.tuples(
    st.sampled_from(["post", "job", "course", "member"]),
    st.sampled_from([*MEMBERS, "co1"]),
    st.floats(0.0, 1.0),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    blocks=st.lists(pairs, max_size=6),
    edges=st.lists(pairs, max_size=8),
    posts=posts,
    jobs=st.lists(st.sampled_from([PUBLIC, CONNECTIONS]), max_size=3),
    lagging=st.integers(0, 3),
    proposals=st.lists(st.tuples(st.integers(0, 40), labels), min_size=1, max_size=30),
)
def test_no_feed_shows_what_the_member_may_not_see(model, blocks, edges, posts, jobs, lagging, proposals):
    """Whatever the FPRs propose, under whatever labels, and whatever the catalog has not seen yet: the
    shipped rules never put into m0's feed an item that m0 may not see by the world's truth."""
    world = Inventory()
    for m in MEMBERS:
        world.apply(ev(EventType.MEMBER_JOINED, m))
    for a, b in blocks:
        world.apply(edge(EventType.BLOCK, a, b))
    for a, b in edges:
        world.apply(edge(EventType.CONNECTION_MADE, a, b))
    events = [created(f"p{i}", author, visibility=vis) for i, (author, vis) in enumerate(posts)]
    events += [created(f"j{i}", "co1", ItemType.JOB, vis) for i, vis in enumerate(jobs)]
    # the mixer's catalog has not yet seen the last ``lagging`` items created; the world has
    catalog = Inventory()
    catalog.members, catalog.connections, catalog.blocks = world.members, world.connections, world.blocks
    for i, e in enumerate(events):
        world.apply(e)
        if i < len(events) - lagging:
            catalog.apply(e)
    ids = [*world.items, *MEMBERS, "nobody"]
    rows = [(ids[k % len(ids)], t, actor, "network", score) for k, (t, actor, score) in proposals]
    member = "m0"
    result = mix(model, rows, SHIPPED_RULES(), catalog, member)
    for s in result.slots:
        if s.item_id in world.items:
            item = world.items[s.item_id]
            assert s.item_id in catalog.items, s  # nothing the catalog has not seen
            assert s.actor_id == item.actor_id, s
            assert world.can_see(member, item), (s, item)
        else:
            assert s.item_id in world.members and s.item_type == "member", s
            assert s.item_id != member and not world.is_blocked(member, s.item_id), s
            assert s.actor_id != member and not world.is_blocked(member, s.actor_id), s
