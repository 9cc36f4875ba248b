import math
from collections import Counter

import pytest

from feedrank.settings import REPO_ROOT
from rankers.registry import load_config
from rankers.rules.actor_diversity import ActorDiversity
from rankers.rules.base import RerankContext, Slot
from rankers.rules.dedupe import Dedupe
from rankers.rules.exploration import Exploration, request_rng
from rankers.rules.fixed_position import FixedPosition
from rankers.rules.fpr_order import FprOrder
from rankers.rules.freshness import Freshness
from rankers.rules.impression_discount import ImpressionDiscount
from rankers.rules.quota import InventoryQuota
from rankers.rules.seen import SeenFilter
from rankers.rules.served import ServedFilter
from rankers.rules.truncate import Truncate
from rankers.rules.type_run import MaxTypeRun
from rankers.rules.visibility import Visibility

CTX = RerankContext(member_id="m1", feed_size=3)


def slots(*spec):
    return [Slot(item_id, item_type, actor, "src", score) for item_id, item_type, actor, score in spec]


def test_dedupe_keeps_first_copy():
    out = Dedupe().apply(slots(("a", "post", "x", 0.9), ("b", "job", "y", 0.8), ("a", "post", "x", 0.1)), CTX)
    assert [s.item_id for s in out] == ["a", "b"]
    assert out[0].score == 0.9


def test_max_type_run_breaks_long_runs():
    s = slots(("j1", "job", "a", 0.9), ("j2", "job", "b", 0.8), ("j3", "job", "c", 0.7), ("p1", "post", "d", 0.1))
    out = MaxTypeRun(max_run=2).apply(s, CTX)
    assert [x.item_id for x in out] == ["j1", "j2", "p1", "j3"]
    assert out[2].moved_by == ["max_type_run"]


def test_max_type_run_keeps_order_when_nothing_else_exists():
    s = slots(("j1", "job", "a", 0.9), ("j2", "job", "b", 0.8), ("j3", "job", "c", 0.7))
    assert [x.item_id for x in MaxTypeRun(max_run=1).apply(s, CTX)] == ["j1", "j2", "j3"]


def test_max_type_run_rejects_bad_config():
    with pytest.raises(ValueError, match="max_run"):
        MaxTypeRun(max_run=0)
    with pytest.raises(ValueError, match="break_score_ratio"):
        MaxTypeRun(break_score_ratio=1.5)


def test_soft_max_type_run_breaks_a_run_only_for_a_good_enough_item():
    def slate():
        return slots(
            ("j1", "job", "a", 0.9),
            ("j2", "job", "b", 0.8),
            ("j3", "job", "c", 0.7),
            ("p1", "post", "d", 0.5),
            ("j4", "job", "e", 0.45),
            ("p2", "post", "f", 0.1),
        )

    # p1 (0.5) is at least 0.7 x j3 (0.7): the run breaks there. After j3, j4 (0.45) would make a run of
    # three again, but p2 (0.1) is far below it: the run goes on.
    out = MaxTypeRun(max_run=2, break_score_ratio=0.7).apply(slate(), CTX)
    assert [x.item_id for x in out] == ["j1", "j2", "p1", "j3", "j4", "p2"]
    # a higher ratio keeps the job run: p1 is under 0.8 x j3
    out = MaxTypeRun(max_run=2, break_score_ratio=0.8).apply(slate(), CTX)
    assert [x.item_id for x in out] == ["j1", "j2", "j3", "p1", "j4", "p2"]
    assert all(x.moved_by == [] for x in out[:3])
    # the hard rule (ratio 0) breaks every run of three
    out = MaxTypeRun(max_run=2).apply(slate(), CTX)
    assert [x.item_id for x in out] == ["j1", "j2", "p1", "j3", "j4", "p2"]
    out = MaxTypeRun(max_run=1).apply(slate(), CTX)
    assert [x.item_id for x in out] == ["j1", "p1", "j2", "p2", "j3", "j4"]


def test_actor_diversity_demotes_repeated_actor():
    s = slots(("p1", "post", "a", 0.9), ("p2", "post", "a", 0.8), ("p3", "post", "b", 0.5))
    out = ActorDiversity(discount=0.5).apply(s, CTX)
    assert [x.item_id for x in out] == ["p1", "p3", "p2"]
    assert out[2].moved_by == ["actor_diversity"]
    assert out[2].score == 0.8  # the pCTR shown is not changed, only the order


def test_actor_diversity_rejects_bad_discount():
    with pytest.raises(ValueError, match="discount"):
        ActorDiversity(discount=0)


def test_truncate_to_feed_size():
    s = slots(*[(f"i{i}", "post", "a", 1 - i / 10) for i in range(5)])
    assert len(Truncate().apply(s, CTX)) == 3


def sourced(*spec):
    return [Slot(i, "post", f"a{i}", src, score) for i, src, score in spec]


def test_quota_gives_every_inventory_a_slot_and_caps_the_rest():
    ctx = RerankContext(member_id="m1", feed_size=4)
    s = sourced(
        ("n1", "network", 0.9),
        ("n2", "network", 0.8),
        ("n3", "network", 0.7),
        ("n4", "network", 0.6),
        ("j1", "jobs", 0.2),
        ("c1", "courses", 0.1),
    )
    out = InventoryQuota(min_per_source=1, max_share=0.5).apply(s, ctx)
    top = [x.item_id for x in out[:4]]
    assert top == ["n1", "n2", "j1", "c1"]  # rank order kept inside the visible slots
    assert [x.item_id for x in out[4:]] == ["n3", "n4"]  # the rest stays, below the fold
    assert out[2].moved_by == ["inventory_quota"]


def test_quota_without_pressure_changes_nothing():
    ctx = RerankContext(member_id="m1", feed_size=3)
    s = sourced(("a", "network", 0.9), ("b", "jobs", 0.8), ("c", "people", 0.7))
    assert [x.item_id for x in InventoryQuota().apply(s, ctx)] == ["a", "b", "c"]


def test_quota_rejects_bad_share():
    with pytest.raises(ValueError, match="max_share"):
        InventoryQuota(max_share=0)
    with pytest.raises(ValueError, match="cap_score_ratio"):
        InventoryQuota(cap_score_ratio=-0.1)


def test_soft_quota_cap_holds_an_item_back_only_for_a_good_enough_one():
    ctx = RerankContext(member_id="m1", feed_size=4)

    def slate():
        return sourced(
            ("p1", "people", 0.9),
            ("p2", "people", 0.8),
            ("p3", "people", 0.7),
            ("p4", "people", 0.65),
            ("n1", "network", 0.6),
            ("n2", "network", 0.2),
        )

    def top(rule):
        return [x.item_id for x in rule.apply(slate(), ctx)[:4]]

    # people may take at most 2 of 4 slots
    assert top(InventoryQuota(min_per_source=0, max_share=0.5)) == ["p1", "p2", "n1", "n2"]
    # soft at 0.5: p3 (0.7) is held back for n1 (0.6 >= 0.35), then not for n2 (0.2 < 0.35)
    out = InventoryQuota(min_per_source=0, max_share=0.5, cap_score_ratio=0.5).apply(slate(), ctx)
    assert [x.item_id for x in out] == ["p1", "p2", "p3", "n1", "p4", "n2"]
    assert out[3].moved_by == ["inventory_quota"]  # n1 passed p4
    # soft at 0.95: p3 is not held back for n1 (0.6 < 0.665), nor p4 (0.6 < 0.6175)
    assert top(InventoryQuota(min_per_source=0, max_share=0.5, cap_score_ratio=0.95)) == ["p1", "p2", "p3", "p4"]


def test_quota_limits_override_one_inventory():
    ctx = RerankContext(member_id="m1", feed_size=4)
    s = sourced(
        ("n1", "network", 0.9),
        ("n2", "network", 0.8),
        ("j1", "jobs", 0.7),
        ("j2", "jobs", 0.6),
        ("j3", "jobs", 0.5),
        ("c1", "courses", 0.1),
        ("c2", "courses", 0.05),
    )
    # network may take only 1 slot, courses must take 2; jobs keep the general cap (ceil(0.5 * 4) = 2).
    rule = InventoryQuota(limits={"network": {"max": 1}, "courses": {"min": 2}})
    out = rule.apply(s, ctx)
    assert [x.item_id for x in out[:4]] == ["n1", "j1", "c1", "c2"]
    assert [x.item_id for x in out[4:]] == ["n2", "j2", "j3"]
    assert out[2].moved_by == ["inventory_quota"] and out[3].moved_by == ["inventory_quota"]
    assert out[1].moved_by == ["inventory_quota"]  # j1 moved up past n2
    assert out[0].moved_by == []


def test_quota_limits_max_above_share_and_zero_max():
    ctx = RerankContext(member_id="m1", feed_size=4)
    s = sourced(
        ("j1", "jobs", 0.9), ("j2", "jobs", 0.8), ("j3", "jobs", 0.7), ("p1", "people", 0.6), ("n1", "network", 0.5)
    )
    out = InventoryQuota(min_per_source=0, limits={"jobs": {"max": 3}, "people": {"max": 0}}).apply(s, ctx)
    assert [x.item_id for x in out] == ["j1", "j2", "j3", "n1", "p1"]
    assert InventoryQuota(min_per_source=0).bounds("jobs", 4) == (0, 2)
    assert InventoryQuota(limits={"people": {"max": 0}}).bounds("people", 4) == (0, 0)  # max lowers the minimum


@pytest.mark.parametrize(
    "limits",
    [
        {"jobs": {"min": 3, "max": 2}},
        {"jobs": {"min": -1}},
        {"jobs": {"max": 1.5}},
        {"jobs": {"most": 2}},
        {"jobs": 2},
        ["jobs"],
    ],
)
def test_quota_rejects_bad_limits(limits):
    with pytest.raises(ValueError, match=r"inventory_quota\.limits"):
        InventoryQuota(limits=limits)


# --- visibility ---------------------------------------------------------------------------------------


class Graph:
    """A tiny graph: ``blocks`` as (blocker, blocked) pairs, ``edges`` as undirected connections."""

    def __init__(self, blocks=(), edges=()):
        self.blocks = set(blocks)
        self.edges = {frozenset(e) for e in edges}

    def is_blocked(self, member_id, actor_id):
        return (member_id, actor_id) in self.blocks or (actor_id, member_id) in self.blocks

    def is_connected(self, member_id, actor_id):
        return frozenset((member_id, actor_id)) in self.edges


def test_visibility_drops_blocked_private_and_own_items():
    graph = Graph(blocks=[("m1", "spammer"), ("grudge", "m1")], edges=[("m1", "friend")])
    ctx = RerankContext(member_id="m1", feed_size=10, graph=graph)
    s = [
        Slot("p1", "post", "spammer", "network", 0.9),  # the member blocked the actor
        Slot("p2", "post", "grudge", "network", 0.8),  # the actor blocked the member
        Slot("p3", "post", "friend", "network", 0.7, visibility="connections"),
        Slot("p4", "post", "stranger", "network", 0.6, visibility="connections"),
        Slot("p5", "post", "stranger", "network", 0.5),  # public: visible to all
        Slot("p6", "post", "m1", "network", 0.4),  # the member's own post
        Slot("m1", "member", "m1", "people", 0.3),  # the member's own card
        Slot("grudge", "member", "grudge", "people", 0.2),  # a card of a member who blocked them
        Slot("friend", "member", "friend", "people", 0.1),
    ]
    out = Visibility().apply(s, ctx)
    assert [x.item_id for x in out] == ["p3", "p5", "friend"]
    assert all(x.moved_by == [] for x in out)


def test_visibility_without_graph_drops_connections_only_posts():
    s = [Slot("p1", "post", "a", "network", 0.9, visibility="connections"), Slot("p2", "post", "a", "network", 0.8)]
    assert [x.item_id for x in Visibility().apply(s, CTX)] == ["p2"]


# --- seen / served ------------------------------------------------------------------------------------


def history_slots():
    return [
        Slot("p1", "post", "a", "network", 0.9, impressions=1),
        Slot("p2", "post", "a", "network", 0.8),
        Slot("j1", "job", "b", "jobs", 0.7, impressions=3),
        Slot("j2", "job", "b", "jobs", 0.6, hidden=True),
        Slot("c1", "course", "c", "courses", 0.5, engagements=1),
        Slot("c2", "course", "c", "courses", 0.4, impressions=2),
    ]


def test_seen_drops_seen_posts_hidden_and_engaged():
    out = SeenFilter().apply(history_slots(), CTX)
    assert [x.item_id for x in out] == ["p2", "j1", "c2"]  # seen jobs and courses are not dropped by default


def test_seen_options():
    out = SeenFilter(item_types=["post", "job", "course"], drop_hidden=False, drop_engaged=False).apply(
        history_slots(), CTX
    )
    assert [x.item_id for x in out] == ["p2", "j2", "c1"]
    assert SeenFilter(item_types=["job"]).item_types == ("job",)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"item_types": ["story"]}, r"seen\.item_types"),
        ({"item_types": "post"}, r"seen\.item_types"),
        ({"drop_hidden": "yes"}, r"seen\.drop_hidden"),
        ({"drop_engaged": 1}, r"seen\.drop_engaged"),
    ],
)
def test_seen_rejects_bad_params(params, needle):
    with pytest.raises(ValueError, match=needle):
        SeenFilter(**params)


def test_served_drops_items_served_within_the_window():
    ctx = RerankContext(member_id="m1", feed_size=10, now=10_000.0)
    s = [
        Slot("a", "post", "x", "network", 0.9, served_at=10_000.0 - 60),  # a minute ago
        Slot("b", "post", "x", "network", 0.8, served_at=10_000.0 - 900),  # exactly the window ago
        Slot("c", "post", "x", "network", 0.7),  # never served
        Slot("d", "post", "x", "network", 0.6, served_at=10_000.0 - 899.5),
        Slot("e", "post", "x", "network", 0.5, served_at=1_000.0),
    ]
    assert [x.item_id for x in ServedFilter(window_s=900).apply(s, ctx)] == ["b", "c", "e"]


@pytest.mark.parametrize("window", [-1.0, float("inf"), "15m"])
def test_served_rejects_bad_window(window):
    with pytest.raises(ValueError, match=r"served\.window_s"):
        ServedFilter(window_s=window)


# --- FPR order within an inventory ---------------------------------------------------------------------


def test_fpr_order_hands_each_inventorys_scores_out_in_its_fprs_order():
    s = [
        Slot("p1", "post", "a", "network", 0.9, pctr=0.9, fpr_score=0.2),
        Slot("m1", "member", "m1", "people", 0.8, pctr=0.8, fpr_score=0.1),
        Slot("p2", "post", "b", "network", 0.6, pctr=0.6, fpr_score=0.5),  # the FPR's best post
        Slot("m2", "member", "m2", "people", 0.5, pctr=0.5, fpr_score=0.3),  # the FPR's best card
        Slot("p3", "post", "c", "network", 0.4, pctr=0.4, fpr_score=0.4),
    ]
    out = FprOrder().apply(s, CTX)
    assert [x.item_id for x in out] == ["p2", "m2", "p3", "m1", "p1"]
    assert [x.score for x in out] == pytest.approx([0.9, 0.8, 0.6, 0.5, 0.4])  # the same scores, the same mix
    assert [x.source for x in out] == ["network", "people", "network", "people", "network"]
    assert [x.pctr for x in out] == pytest.approx([0.6, 0.5, 0.4, 0.8, 0.9])  # each estimate stays its own
    assert all(x.moved_by == ["fpr_order"] for x in out)


def test_fpr_order_only_the_named_sources_and_unscored_items_last():
    s = [
        Slot("p1", "post", "a", "network", 0.9, fpr_score=0.1),
        Slot("p2", "post", "b", "network", 0.8, fpr_score=0.3),
        Slot("j1", "job", "c", "jobs", 0.7),  # no FPR score (NaN): after the scored jobs
        Slot("j2", "job", "d", "jobs", 0.6, fpr_score=0.05),
    ]
    out = FprOrder(sources=["jobs"]).apply(s, CTX)
    assert [x.item_id for x in out] == ["p1", "p2", "j2", "j1"]  # network keeps the SPR's order
    assert [x.moved_by for x in out] == [[], [], ["fpr_order"], ["fpr_order"]]


@pytest.mark.parametrize("sources", ["people", 3, [""], [3]])
def test_fpr_order_rejects_bad_sources(sources):
    with pytest.raises(ValueError, match=r"fpr_order\.sources"):
        FprOrder(sources=sources)


# --- impression discount ------------------------------------------------------------------------------


def test_impression_discount_lowers_ignored_items_and_resorts():
    s = [
        Slot("a", "job", "x", "jobs", 0.9, impressions=2),  # 0.9 * 0.5^2 = 0.225
        Slot("b", "job", "y", "jobs", 0.8, impressions=2, engagements=1),  # engaged: untouched
        Slot("c", "job", "z", "jobs", 0.5),
        Slot("d", "job", "w", "jobs", 0.3, impressions=1),  # 0.15
    ]
    out = ImpressionDiscount(factor=0.5).apply(s, CTX)
    assert [x.item_id for x in out] == ["b", "c", "a", "d"]
    assert [x.score for x in out] == pytest.approx([0.8, 0.5, 0.225, 0.15])
    assert [x.moved_by for x in out] == [["impression_discount"]] * 3 + [[]]  # d stays last


def test_impression_discount_drops_after_max_and_keeps_ties_in_order():
    s = [
        Slot("a", "job", "x", "jobs", 0.8, impressions=1),  # 0.4, ties with b: a stays first
        Slot("b", "job", "y", "jobs", 0.4),
        Slot("c", "job", "z", "jobs", 0.3, impressions=3),  # dropped
        Slot("d", "job", "w", "jobs", 0.2, impressions=3, engagements=2),  # engaged: kept as is
    ]
    out = ImpressionDiscount(factor=0.5, max_impressions=3).apply(s, CTX)
    assert [x.item_id for x in out] == ["a", "b", "d"]
    assert all(x.moved_by == [] for x in out)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"factor": 0}, r"impression_discount\.factor"),
        ({"factor": 1.5}, r"impression_discount\.factor"),
        ({"max_impressions": 0}, r"impression_discount\.max_impressions"),
        ({"max_impressions": 2.5}, r"impression_discount\.max_impressions"),
    ],
)
def test_impression_discount_rejects_bad_params(params, needle):
    with pytest.raises(ValueError, match=needle):
        ImpressionDiscount(**params)


# --- freshness ----------------------------------------------------------------------------------------

HOUR = 3600.0


def test_freshness_decays_by_type_and_drops_too_old():
    now = 1_000 * HOUR
    ctx = RerankContext(member_id="m1", feed_size=10, now=now)
    s = [
        Slot("old", "post", "a", "network", 0.8, created_at=now - 48 * HOUR),  # 0.8 * (0.5 + 0.5 * 0.25)
        Slot("stale", "post", "a", "network", 0.85, created_at=now - 200 * HOUR),  # past 168 h: dropped
        Slot("new", "post", "b", "network", 0.6, created_at=now),  # age 0: untouched
        Slot("job", "job", "c", "jobs", 0.59, created_at=now - 700 * HOUR),  # no half-life for jobs, < 720 h
        Slot("oldjob", "job", "c", "jobs", 0.58, created_at=now - 721 * HOUR),  # past 720 h: dropped
        Slot("card", "member", "d", "people", 0.57),  # no created_at: untouched
        Slot("future", "post", "e", "network", 0.56, created_at=now + HOUR),  # clock skew: age clipped at 0
        Slot("course", "course", "f", "courses", 0.55, created_at=0.0),  # type not listed: untouched
    ]
    out = Freshness().apply(s, ctx)
    assert [x.item_id for x in out] == ["new", "job", "card", "future", "course", "old"]
    assert {x.item_id: x.score for x in out} == pytest.approx(
        {"old": 0.8 * 0.625, "new": 0.6, "job": 0.59, "card": 0.57, "future": 0.56, "course": 0.55}
    )
    assert out[5].moved_by == ["freshness"]  # "old" fell below five items
    assert out[0].moved_by == ["freshness"]  # the items it fell below moved up past it


def test_freshness_floor_and_half_life():
    ctx = RerankContext(member_id="m1", feed_size=10, now=100 * HOUR)
    rule = Freshness(half_life_h={"course": 10}, floor=0.0, max_age_h={})
    out = rule.apply([Slot("c", "course", "a", "courses", 1.0, created_at=80 * HOUR)], ctx)
    assert out[0].score == pytest.approx(0.25)
    assert out[0].moved_by == []


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"half_life_h": {"post": 0}}, r"freshness\.half_life_h"),
        ({"half_life_h": {"story": 24}}, r"freshness\.half_life_h"),
        ({"half_life_h": 24}, r"freshness\.half_life_h"),
        ({"max_age_h": {"job": -1}}, r"freshness\.max_age_h"),
        ({"floor": 1.5}, r"freshness\.floor"),
    ],
)
def test_freshness_rejects_bad_params(params, needle):
    with pytest.raises(ValueError, match=needle):
        Freshness(**params)


def test_freshness_defaults_are_not_shared():
    a, b = Freshness(), Freshness()
    a.half_life_h["job"] = 1.0
    assert "job" not in b.half_life_h


# --- fixed position -----------------------------------------------------------------------------------


def test_fixed_position_pins_the_best_item_of_the_source():
    s = sourced(
        ("n1", "network", 0.9),
        ("n2", "network", 0.8),
        ("n3", "network", 0.7),
        ("pp1", "people", 0.6),
        ("n4", "network", 0.5),
        ("pp2", "people", 0.4),
    )
    out = FixedPosition(source="people", position=1).apply(s, CTX)
    assert [x.item_id for x in out] == ["n1", "pp1", "n2", "n3", "n4"]  # exclusive: pp2 removed
    assert out[1].pinned and not any(x.pinned for x in out if x.item_id != "pp1")
    assert out[1].moved_by == ["fixed_position"]
    assert all(x.moved_by == [] for x in out if x.item_id != "pp1")


def test_fixed_position_not_exclusive_and_past_the_end():
    s = sourced(("pp1", "people", 0.9), ("n1", "network", 0.8), ("pp2", "people", 0.7))
    out = FixedPosition(source="people", position=5, exclusive=False).apply(s, CTX)
    assert [x.item_id for x in out] == ["n1", "pp2", "pp1"]
    assert out[2].pinned and out[2].moved_by == ["fixed_position"]


def test_fixed_position_already_there_or_absent():
    s = sourced(("n1", "network", 0.9), ("n2", "network", 0.8), ("pp1", "people", 0.7))
    out = FixedPosition(source="people", position=2).apply(s, CTX)
    assert [x.item_id for x in out] == ["n1", "n2", "pp1"]
    assert out[2].pinned and out[2].moved_by == []
    s = sourced(("n1", "network", 0.9), ("j1", "jobs", 0.8))
    out = FixedPosition(source="people").apply(s, CTX)
    assert [x.item_id for x in out] == ["n1", "j1"] and not any(x.pinned for x in out)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"position": -1}, r"fixed_position\.position"),
        ({"position": 1.5}, r"fixed_position\.position"),
        ({"source": ""}, r"fixed_position\.source"),
        ({"exclusive": "no"}, r"fixed_position\.exclusive"),
    ],
)
def test_fixed_position_rejects_bad_params(params, needle):
    with pytest.raises(ValueError, match=needle):
        FixedPosition(**params)


# --- exploration --------------------------------------------------------------------------------------


def explore_slate(pinned_at=1, n=5):
    s = sourced(*[(f"i{k}", "network", 1 - k / 10) for k in range(n)])
    if pinned_at is not None:
        s[pinned_at].pinned = True
    return s


def explore_ctx(request_id):
    return RerankContext(member_id="m1", feed_size=10, request_id=request_id)


def expected_propensity(greedy_ids, pinned_ids, pool, epsilon, item_id, position):
    """An independent statement of the policy's marginal P(item at position)."""
    if item_id in pinned_ids:
        return 1.0 if greedy_ids.index(item_id) == position else 0.0
    unpinned = [i for i in greedy_ids if i not in pinned_ids]
    pooled = unpinned if pool is None else unpinned[:pool]
    if item_id not in pooled:
        return 1.0 if greedy_ids.index(item_id) == position else 0.0
    pool_positions = [greedy_ids.index(i) for i in pooled]
    if position not in pool_positions:
        return 0.0
    greedy_here = greedy_ids.index(item_id) == position
    return (1 - epsilon) * greedy_here + epsilon / len(pooled)


def test_exploration_is_reproducible_per_request():
    rule = Exploration(epsilon=0.5)
    runs = [[(x.item_id, x.propensity) for x in rule.apply(explore_slate(), explore_ctx("req-42"))] for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]
    feeds = {tuple(x.item_id for x in rule.apply(explore_slate(), explore_ctx(f"r{k}"))) for k in range(50)}
    assert len(feeds) > 5  # different requests do explore differently


def test_request_rng_depends_on_the_request_and_the_seed_only():
    def draws(*args):
        return request_rng(*args).random(4).tolist()

    assert draws("req-42") == draws("req-42")
    assert draws("req-42", 7) == draws("req-42", 7)
    assert len({tuple(draws(*a)) for a in (("req-42",), ("req-43",), ("req-42", 7), ("req-42", 8))}) == 4


@pytest.mark.parametrize("pool", [None, 3])
def test_exploration_propensities_are_the_exact_marginals(pool):
    epsilon, runs = 0.3, 20_000
    greedy = [x.item_id for x in explore_slate()]
    pinned = {"i1"}
    rule = Exploration(epsilon=epsilon, pool=pool)
    counts: Counter = Counter()
    logged: dict[tuple[str, int], float] = {}
    for r in range(runs):
        out = rule.apply(explore_slate(), explore_ctx(f"request-{r}"))
        assert sorted(x.item_id for x in out) == sorted(greedy)
        for pos, x in enumerate(out):
            counts[x.item_id, pos] += 1
            assert logged.setdefault((x.item_id, pos), x.propensity) == x.propensity  # a function of (item, pos)
            assert x.propensity == pytest.approx(expected_propensity(greedy, pinned, pool, epsilon, x.item_id, pos))
            assert (x.moved_by == ["exploration"]) == (greedy[pos] != x.item_id)
    # The empirical frequency of every (item, position) matches its logged propensity.
    for (item, pos), p in logged.items():
        se = math.sqrt(p * (1 - p) / runs)
        assert abs(counts[item, pos] / runs - p) <= 4 * se + 1e-12, (item, pos, counts[item, pos] / runs, p)
    # Every possible placement was observed, and the propensities over items sum to 1 at every position
    # and over positions for every item.
    possible = {
        (i, pos)
        for i in greedy
        for pos in range(len(greedy))
        if expected_propensity(greedy, pinned, pool, epsilon, i, pos)
    }
    assert set(logged) == possible
    for pos in range(len(greedy)):
        assert sum(p for (_, q), p in logged.items() if q == pos) == pytest.approx(1.0)
    for item in greedy:
        assert sum(p for (i, _), p in logged.items() if i == item) == pytest.approx(1.0)


def test_exploration_with_zero_epsilon_never_moves():
    rule = Exploration(epsilon=0.0)
    greedy = [x.item_id for x in explore_slate()]
    for r in range(200):
        out = rule.apply(explore_slate(), explore_ctx(f"r{r}"))
        assert [x.item_id for x in out] == greedy
        assert all(x.propensity == 1.0 and x.moved_by == [] for x in out)


def test_exploration_never_moves_pinned_slots():
    rule = Exploration(epsilon=1.0)
    for r in range(200):
        s = explore_slate(pinned_at=None, n=6)
        s[0].pinned = s[4].pinned = True
        out = rule.apply(s, explore_ctx(f"r{r}"))
        assert out[0].item_id == "i0" and out[4].item_id == "i4"
        assert out[0].propensity == out[4].propensity == 1.0
        assert {x.propensity for x in out if not x.pinned} == {0.25}


def test_exploration_leaves_slots_outside_the_pool():
    rule = Exploration(epsilon=1.0, pool=2)
    for r in range(50):
        out = rule.apply(explore_slate(pinned_at=0), explore_ctx(f"r{r}"))
        assert [x.item_id for x in out[:1] + out[3:]] == ["i0", "i3", "i4"]
        assert {x.item_id for x in out[1:3]} == {"i1", "i2"}
        assert [x.propensity for x in out] == [1.0, 0.5, 0.5, 1.0, 1.0]


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"epsilon": -0.1}, r"exploration\.epsilon"),
        ({"epsilon": 1.1}, r"exploration\.epsilon"),
        ({"pool": 0}, r"exploration\.pool"),
        ({"pool": 2.0}, r"exploration\.pool"),
    ],
)
def test_exploration_rejects_bad_params(params, needle):
    with pytest.raises(ValueError, match=needle):
        Exploration(**params)


# --- the shipped configuration ------------------------------------------------------------------------


def test_shipped_config_builds_every_rule_in_order():
    rules = load_config(REPO_ROOT / "config" / "pipeline.toml").build_rules()
    assert [r.name for r in rules] == [
        "dedupe",
        "visibility",
        "seen",
        "served",
        "fpr_order",
        "impression_discount",
        "freshness",
        "actor_diversity",
        "inventory_quota",
        "max_type_run",
        "fixed_position",
        "exploration",
        "truncate",
    ]
    by_name = {r.name: r for r in rules}
    assert by_name["seen"].item_types == ("post",)
    assert by_name["freshness"].half_life_h == {}  # the SPR weighs age; the rule only enforces max ages
    assert by_name["freshness"].max_age_h == {"post": 168.0, "job": 720.0}
    assert (by_name["fixed_position"].source, by_name["fixed_position"].position) == ("people", 2)
    assert by_name["exploration"].epsilon == 0.05 and by_name["exploration"].pool is None


def test_shipped_rules_run_end_to_end():
    rules = load_config(REPO_ROOT / "config" / "pipeline.toml").build_rules()
    now = 1_000 * HOUR
    ctx = RerankContext(member_id="m1", feed_size=4, now=now, request_id="req-1", graph=Graph(blocks=[("m1", "b")]))
    s = [
        Slot("n1", "post", "a", "network", 0.9, created_at=now),
        Slot("n2", "post", "b", "network", 0.8, created_at=now),  # blocked
        Slot("n3", "post", "c", "network", 0.7, created_at=now, impressions=1),  # seen
        Slot("n4", "post", "d", "network", 0.6, created_at=now),
        Slot("j1", "job", "e", "jobs", 0.5, created_at=now),
        Slot("pp1", "member", "pp1", "people", 0.4),
        Slot("pp2", "member", "pp2", "people", 0.3),
    ]
    for rule in rules:
        s = rule.apply(s, ctx)
    assert len(s) == 4
    assert s[2].item_id == "pp1" and s[2].pinned
    assert {x.item_id for x in s} <= {"n1", "n4", "j1", "pp1"}


def test_quota_minimum_skips_items_far_below_the_fold():
    ctx = RerankContext(member_id="m1", feed_size=3)

    def slate():
        return [
            Slot(i, "post", f"a{i}", src, score)
            for i, src, score in [
                ("a", "net", 0.9),
                ("b", "net", 0.8),
                ("c", "net", 0.7),
                ("j", "jobs", 0.5),
                ("k", "courses", 0.01),
            ]
        ]

    out = InventoryQuota(min_per_source=1, max_share=1.0, min_score_ratio=0.5).apply(slate(), ctx)
    # jobs' best (0.5) is at least half the last item shown without quotas (0.7): guaranteed a slot;
    # courses' best (0.01) is not, so it does not displace a network post
    assert [s.item_id for s in out[:3]] == ["a", "b", "j"]
    out = InventoryQuota(min_per_source=1, max_share=1.0).apply(slate(), ctx)
    assert [s.item_id for s in out[:3]] == ["a", "j", "k"]
    with pytest.raises(ValueError, match="min_score_ratio"):
        InventoryQuota(min_score_ratio=1.5)
