import pytest

from rankers.rules.actor_diversity import ActorDiversity
from rankers.rules.base import RerankContext, Slot
from rankers.rules.dedupe import Dedupe
from rankers.rules.quota import InventoryQuota
from rankers.rules.truncate import Truncate
from rankers.rules.type_run import MaxTypeRun

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
