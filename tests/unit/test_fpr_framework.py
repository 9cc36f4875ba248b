"""The shared FPR framework: top-k ordering, point-in-time replay, calibration, cold-start sources."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feedrank.contracts import EventType, ItemType, MemberEvent
from rankers.baselines import CommonNeighboursScorer, PopularityScorer, RecencyScorer
from rankers.calibration import PlattCalibrator, observed_over_expected
from rankers.cold_start import PopularItems, PopularMembers
from rankers.fpr import FirstPassRanker, RetrainedRanker, RetrainedScorer, new_items_after, top_indices
from rankers.inventory import Inventory
from rankers.training import replay

T0 = 1_767_225_600.0
_seq = iter(range(10**6))


def ev(event_type: EventType, member_id: str, ts: float = T0, **kw) -> MemberEvent:
    return MemberEvent(event_id=f"e{next(_seq)}", event_type=event_type, member_id=member_id, timestamp=ts, **kw)


def post(pid: str, author: str, ts: float, visibility: str = "public") -> MemberEvent:
    return ev(
        EventType.POST_CREATED, author, ts, item_id=pid, item_type=ItemType.POST, attributes={"visibility": visibility}
    )


def click(member: str, pid: str, actor: str, ts: float) -> MemberEvent:
    return ev(EventType.CLICK, member, ts, item_id=pid, item_type=ItemType.POST, item_actor_id=actor)


def test_top_indices_orders_by_score_then_candidate_order():
    s = np.array([0.2, 0.9, 0.5, 0.9, 0.1, 0.5])
    assert top_indices(s, 3).tolist() == [1, 3, 2]
    assert top_indices(s, 10).tolist() == [1, 3, 2, 5, 0, 4]
    assert top_indices(np.zeros(5), 2).tolist() == [0, 1]


class _Nothing:
    def candidates(self, inv, member_id, now):
        return []


def test_ranker_falls_back_to_cold_start_and_clips_scores():
    inv = Inventory()
    for i in range(5):
        inv.apply(post(f"p{i}", "m9", T0 + i))
    inv.apply(click("m8", "p3", "m9", T0 + 10))
    ranker = FirstPassRanker("t", _Nothing(), PopularityScorer(), k=3, cold_start=PopularItems(ItemType.POST))
    got = ranker.top_k(inv, "never-seen", T0 + 20)
    assert got[0].item_id == "p3"  # the engaged post first
    assert len(got) == 3 and all(0.0 <= c.score <= 1.0 for c in got)
    assert FirstPassRanker("t", _Nothing(), PopularityScorer(), k=3).top_k(inv, "x", T0) == []


class _AllPosts:
    def candidates(self, inv, member_id, now):
        return [i for i, item in inv.items.items() if item.item_type == ItemType.POST]


def test_a_retrained_fpr_answers_with_the_model_deployed_at_each_moment():
    inv = Inventory()
    for i in range(4):
        inv.apply(post(f"p{i}", "m9", T0 + 100 * i))  # p3 newest
    inv.apply(click("m8", "p0", "m9", T0 + 400))  # p0 most engaged
    recency, popularity = RecencyScorer(), PopularityScorer()
    setattr(recency, "trained_until", T0 + 50.0)  # noqa: B010 (what TrainedFpr.stamp sets)
    setattr(popularity, "trained_until", T0 + 4000.0)  # noqa: B010
    deployed = [T0 + 1000.0, T0 + 5000.0]
    ranker = RetrainedRanker.of(
        deployed, [FirstPassRanker("t", _AllPosts(), s, k=1, serves=ItemType.POST) for s in (recency, popularity)]
    )
    # before the second deployment (and before the first: there is no earlier model) the first answers
    for now in (T0 + 500.0, T0 + 2000.0, T0 + 4999.0):
        assert [c.item_id for c in ranker.top_k(inv, "m8", now)] == ["p3"]
        assert ranker.new_items_after(now) == T0 + 50.0
        p, _ = ranker.scorer.score(inv, "m8", ["p0", "p3"], now)
        assert p[1] > p[0]  # the recency model's, as the training rows get it
    for now in (T0 + 5000.0, T0 + 9000.0):
        assert [c.item_id for c in ranker.top_k(inv, "m8", now)] == ["p0"]
        assert ranker.new_items_after(now) == T0 + 4000.0
        p, _ = ranker.scorer.score(inv, "m8", ["p0", "p3"], now)
        assert p[0] > p[1]
    assert new_items_after(ranker.scorer) == T0 + 50.0  # no moment given: the first model's
    assert ranker.candidate_ids(inv, "m8", T0) == ["p0", "p1", "p2", "p3"]
    with pytest.raises(ValueError, match="one deployment time per model"):
        RetrainedScorer([T0], [recency, popularity])
    with pytest.raises(ValueError, match="increase"):
        RetrainedScorer([T0, T0], [recency, popularity])
    with pytest.raises(ValueError, match="at least one"):
        RetrainedRanker.of([], [])


def test_popular_items_respect_visibility_blocks_and_what_was_seen():
    inv = Inventory()
    inv.apply(post("open", "a", T0))
    inv.apply(post("private", "a", T0, "connections"))
    inv.apply(post("blocked", "b", T0))
    inv.apply(ev(EventType.BLOCK, "b", item_id="me", item_type=ItemType.MEMBER))  # b blocked me: hidden both ways
    inv.apply(post("seen", "c", T0))
    inv.apply(ev(EventType.IMPRESSION, "me", item_id="seen", item_type=ItemType.POST, item_actor_id="c"))
    assert PopularItems(ItemType.POST).candidates(inv, "me", T0 + 1) == ["open"]


def test_popular_members_never_offer_self_connections_or_blocked():
    inv = Inventory()
    for m in ["me", "friend", "hub", "blocked", "x", "y"]:
        inv.apply(ev(EventType.MEMBER_JOINED, m))
    for a, b in [("me", "friend"), ("hub", "x"), ("hub", "y"), ("blocked", "x"), ("blocked", "y"), ("blocked", "hub")]:
        inv.apply(ev(EventType.CONNECTION_MADE, a, item_id=b, item_type=ItemType.MEMBER))
    inv.apply(ev(EventType.BLOCK, "me", item_id="blocked", item_type=ItemType.MEMBER))
    got = PopularMembers(limit=10).candidates(inv, "me", T0)
    assert got[0] == "hub" and not {"me", "friend", "blocked"} & set(got)


def test_replay_hands_each_chunk_the_inventory_from_before_it():
    events = [post("p1", "a", T0), click("m", "p1", "a", T0 + 100), click("m", "p1", "a", T0 + 2000)]
    rows = pd.DataFrame({"timestamp": [T0 + 50, T0 + 150, T0 + 1000, T0 + 2500], "item_id": ["p1"] * 4})
    seen: list[tuple[int, int]] = []
    inv = replay(
        events, rows, lambda inv, chunk: seen.append((len(chunk), inv.items["p1"].engagements)), chunk_seconds=600
    )
    # chunk 1 (t0+50, t0+150): nothing clicked before t0+50; chunk 2 (t0+1000): one click; chunk 3: two
    assert seen == [(2, 0), (1, 1), (1, 2)]
    assert inv.items["p1"].engagements == 2


def test_inventory_keeps_histories_and_tie_strength():
    inv = Inventory()
    inv.apply(post("p1", "a", T0))
    inv.apply(click("m", "p1", "a", T0 + 1))
    inv.apply(ev(EventType.IMPRESSION, "m", T0, item_id="p1", item_type=ItemType.POST, item_actor_id="a"))
    assert inv.pair_engagements[("m", "a")] == 1
    assert inv.engaged_items("m") == ["p1"] and inv.engaged_items("m", ItemType.JOB) == []
    assert inv.type_engagements["m"][ItemType.POST] == 1 and inv.type_impressions["m"][ItemType.POST] == 1


def test_inventory_counts_first_impressions_and_the_engagements_after_them():
    inv = Inventory()
    inv.apply(post("p1", "a", T0))
    shown = [("m", T0 + 1), ("m", T0 + 2), ("n", T0 + 3)]
    for member, ts in shown:
        inv.apply(ev(EventType.IMPRESSION, member, ts, item_id="p1", item_type=ItemType.POST, item_actor_id="a"))
    inv.apply(click("m", "p1", "a", T0 + 4))  # after m's second impression: not a first-impression click
    inv.apply(click("n", "p1", "a", T0 + 5))
    inv.apply(click("o", "p1", "a", T0 + 6))  # never shown: no first impression to follow
    item = inv.items["p1"]
    assert (item.impressions, item.viewers) == (3, 2)
    assert (item.engagements, item.first_engagements) == (3, 1)
    assert inv.after_first_impression("n", "p1") and not inv.after_first_impression("m", "p1")


def test_platt_calibration_is_monotone_and_matches_the_base_rate():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=20_000)
    y = rng.random(20_000) < 1 / (1 + np.exp(-(2 * raw - 3)))
    cal = PlattCalibrator().fit(raw, y)
    p = cal.predict(raw)
    assert observed_over_expected(y, p) == pytest.approx(1.0, abs=0.03)
    assert np.all(np.diff(cal.predict(np.sort(raw))) >= 0)
    with pytest.raises(ValueError, match="both clicked and not-clicked"):
        PlattCalibrator().fit(raw[:10], np.zeros(10))


def test_baselines_rank_by_their_one_signal():
    inv = Inventory()
    inv.apply(post("old", "a", T0))
    inv.apply(post("new", "a", T0 + 3600))
    inv.apply(click("m", "old", "a", T0 + 4000))
    now = T0 + 7200
    rec, _ = RecencyScorer().score(inv, "m", ["old", "new"], now)
    pop, _ = PopularityScorer().score(inv, "m", ["old", "new"], now)
    assert rec[1] > rec[0] and pop[0] > pop[1]
    for a, b in [("m", "x"), ("x", "y"), ("m", "z")]:
        inv.apply(ev(EventType.CONNECTION_MADE, a, item_id=b, item_type=ItemType.MEMBER))
    cn, feats = CommonNeighboursScorer().score(inv, "m", ["y", "z"], now)
    assert feats["common_connections"].tolist() == [1.0, 0.0] and cn[0] > cn[1]
