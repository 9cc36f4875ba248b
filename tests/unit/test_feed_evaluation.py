"""The whole-feed evaluation (evaluation/feed_oracle.py) on a tiny simulated world with small models:
the feed is built from the FPRs' candidates with features as of each request, shows nothing it must
not, the metrics are bounded by the oracle, and the system beats the simple feeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from evaluation.feature_replay import stored_for
from evaluation.feed_oracle import (
    CHRONOLOGICAL,
    ORACLE,
    POPULARITY,
    SPR_ONLY,
    SYSTEM,
    SYSTEM_NO_EXPLORATION,
    FeedSnapshot,
    TrainedSystem,
    chronological_order,
    evaluate_feed,
    popularity_order,
    train_system,
)
from evaluation.fpr_oracle import ImpressionCountingInventory, SimulatedWorld, simulate
from evaluation.served_log import served_log
from features.families import derive
from feedrank.contracts import EventType, ItemType, MemberEvent
from feedrank.settings import REPO_ROOT
from rankers.fpr import RetrainedRanker, RetrainedScorer, trained_until
from rankers.inventory import Inventory
from rankers.registry import load_config
from simulator.world import DAY

# Small models (as in the FPRs' own tests): the tiny world trains in seconds.
FAST = {
    "network": {"n_estimators": 100},
    "jobs": {"minilm": False, "tower_epochs": 4, "p2v_epochs": 5, "lgb_n_estimators": 100},
    "courses": {"epochs": 4, "passes": 2},
    "people": {"epochs": 10},
}
SLATE = 10
N_REQUESTS = 60
SERVED = 150


class Checks:
    """Checks every evaluated request against the inventory as it stood then (it moves on afterwards)."""

    def __init__(self, system: TrainedSystem) -> None:
        self.rows = system.rows
        self.snapshots = 0
        self.problems: list[str] = []
        self.feature_rows_compared = 0
        self.engagement: dict[str, list[float]] = {}
        self.oracle: list[float] = []
        self.requests: list[tuple[str, str, float]] = []
        self.offered: dict[str, dict[str, tuple[str, float]]] = {}  # request -> item -> (source, FPR score)
        self.relevance: dict[str, dict[str, float]] = {}

    def __call__(self, snap: FeedSnapshot) -> None:
        self.snapshots += 1
        inv, member = snap.inv, snap.member_id
        self.requests.append((snap.request_id, member, snap.now))
        offered: dict[str, tuple[str, float]] = {}
        for name, cands in snap.answers.items():
            for c in cands:
                offered.setdefault(c.item_id, (name, c.score))  # the first answer's copy, as the union keeps
        self.offered[snap.request_id] = offered
        self.relevance[snap.request_id] = snap.relevance
        union = set(snap.union)
        for variant in (snap.feed, snap.feed_no_exploration):
            ids = [s.item_id for s in variant.slots]
            if len(ids) > SLATE or len(set(ids)) != len(ids):
                self.problems.append(f"{snap.request_id}: feed of {len(ids)} with repeats {ids}")
            for s in variant.slots:
                if s.item_id not in union:
                    self.problems.append(f"{snap.request_id}: {s.item_id} is no FPR's candidate")
                item = inv.items.get(s.item_id)
                if item is not None:
                    if not inv.can_see(member, item):
                        self.problems.append(f"{snap.request_id}: {s.item_id} by {item.actor_id} is not visible")
                elif s.item_id == member or inv.is_blocked(member, s.item_id):
                    self.problems.append(f"{snap.request_id}: member card {s.item_id} is own or blocked")
        # each FPR's ranking is its own top of its own inventory
        for name, cands in snap.answers.items():
            want = [c.item_id for c in cands if c.item_id in snap.relevance][:SLATE]
            if snap.rankings[f"fpr:{name}"] != want:
                self.problems.append(f"{snap.request_id}: fpr:{name} ranking is not its top {SLATE}")
        # the oracle's expected clicks bound every ranking's, request by request
        exam = (1.0 + np.arange(SLATE)) ** -0.7
        best = float(np.sort(list(snap.relevance.values()))[::-1][:SLATE] @ exam[: min(SLATE, len(snap.relevance))])
        self.oracle.append(best)
        for name, ranking in snap.rankings.items():
            got = float(sum(exam[p] * snap.relevance[i] for p, i in enumerate(ranking)))
            self.engagement.setdefault(name, []).append(got)
            if got > best + 1e-9:
                self.problems.append(f"{snap.request_id}: {name} beats the oracle ({got} > {best})")
        self._compare_features(snap)

    def _compare_features(self, snap: FeedSnapshot) -> None:
        """The stored features the evaluation reads for an item equal the training rows' (both point in
        time): checked on the request's logged top slot, whose impression is at the request's time."""
        logged = self.rows[(self.rows["request_id"] == snap.request_id) & (self.rows["position"] == 0)]
        if logged.empty:
            return
        row = logged.iloc[0]
        frame = pd.DataFrame(
            {"item_id": [row["item_id"]], "item_type": [row["item_type"]], "actor_id": [row["actor_id"]]}
        )
        got = derive(stored_for(snap.inv.rows, snap.member_id, frame), snap.now).iloc[0]
        for col in got.index:
            if not math.isclose(float(got[col]), float(row[col]), rel_tol=1e-9, abs_tol=1e-12):
                self.problems.append(f"{snap.request_id}: {col} {got[col]} != training row's {row[col]}")
        self.feature_rows_compared += 1


@pytest.fixture(scope="module")
def world() -> SimulatedWorld:
    return simulate(members=300, requests=3000, seed=11)


@pytest.fixture(scope="module")
def system(world: SimulatedWorld) -> TrainedSystem:
    return train_system(world, 0.7, params=FAST, served_requests=SERVED)


@pytest.fixture(scope="module")
def evaluated(world: SimulatedWorld, system: TrainedSystem) -> tuple[dict, Checks]:
    checks = Checks(system)
    config = load_config(REPO_ROOT / "config/pipeline.toml")
    keep = {"Dedupe", "Truncate"}
    variants = {
        "as shipped": config.with_rules({}),
        "dedupe and truncate only": config.with_rules(
            {s.rule.rpartition(":")[2]: False for s in config.rules if s.rule.rpartition(":")[2] not in keep}
        ),
    }
    report = evaluate_feed(
        world,
        n_requests=N_REQUESTS,
        k=10,
        slate=SLATE,
        seed=0,
        inspect=checks,
        rule_ablation=False,
        system=system,
        variants=variants,
    )
    return report, checks


def test_every_sampled_request_is_evaluated_and_the_feeds_are_full(evaluated):
    report, checks = evaluated
    assert report["requests"] == N_REQUESTS == checks.snapshots
    assert report["skipped_requests"] == 0 and report["unknown_candidates"] == 0
    assert report["mean_feed_size"] == SLATE
    assert report["mean_union_size"] > 3 * SLATE


def test_feeds_hold_only_visible_candidates_and_fpr_rankings_are_their_own_tops(evaluated):
    report, checks = evaluated
    assert checks.problems == []
    assert report["feed_violations"] == {"not_a_candidate": 0, "repeated": 0, "blocked": 0, "invisible": 0}


def test_features_at_serving_equal_the_training_rows(evaluated):
    _, checks = evaluated
    assert checks.feature_rows_compared >= N_REQUESTS // 2  # most requests' top slot is a scored item
    assert not [p for p in checks.problems if "training row" in p]


def test_metrics_are_bounded_and_the_oracle_bounds_every_ranking(evaluated):
    report, checks = evaluated
    rankings = report["rankings"]
    fprs = set(load_config(REPO_ROOT / "config/pipeline.toml").fprs)
    assert set(rankings) >= {SYSTEM, SYSTEM_NO_EXPLORATION, CHRONOLOGICAL, POPULARITY, ORACLE} | {
        f"fpr:{n}" for n in fprs
    }
    best = rankings[ORACLE]["expected_engagement"]
    assert best > 0
    for name, m in rankings.items():
        assert 0.0 <= m["ndcg@10"] <= 1.0, name
        assert 0.0 <= m["share_of_oracle"] <= 1.0, name
        assert m["expected_engagement"] <= best + 1e-12, name
    # the report's means are the per-request values the snapshots recompute independently
    assert best == pytest.approx(np.mean(checks.oracle), rel=1e-9)
    for name, values in checks.engagement.items():
        assert rankings[name]["expected_engagement"] == pytest.approx(np.mean(values), rel=1e-9), name


def test_rule_variants_are_scored_on_the_same_requests(evaluated):
    report = evaluated[0]
    rankings, variants = report["rankings"], report["rule_variants"]
    shipped, spr_order = variants["as shipped"], variants["dedupe and truncate only"]
    # the shipped rules as a variant rebuild the system's feeds exactly; dedupe and truncate alone, the SPR's order
    for got, want in ((shipped, rankings[SYSTEM]), (spr_order, rankings[SPR_ONLY])):
        assert got["expected_engagement"] == want["expected_engagement"]
        assert got["ndcg@10"] == want["ndcg@10"]
    assert shipped["minus"][SYSTEM]["engagement"] == [0.0, 0.0]
    assert spr_order["minus"][SYSTEM]["engagement"][0] == pytest.approx(-rankings[SPR_ONLY]["system_minus_this"])
    for name in (n for n in rankings if n.startswith("fpr:")):
        diff, se = shipped["minus"][name]["engagement"]
        assert diff == pytest.approx(rankings[name]["system_minus_this"]) and se > 0
        ndcg_diff, _ = shipped["minus"][name]["ndcg@10"]
        assert ndcg_diff == pytest.approx(rankings[SYSTEM]["ndcg@10"] - rankings[name]["ndcg@10"])


def test_the_system_beats_the_chronological_and_popularity_feeds(evaluated):
    rankings = evaluated[0]["rankings"]
    system, chrono, popular = rankings[SYSTEM], rankings[CHRONOLOGICAL], rankings[POPULARITY]
    # chronological: by a clear margin (about +35% of expected clicks here, +70% at 2,000 members)
    assert system["expected_engagement"] > 1.15 * chrono["expected_engagement"]
    assert chrono["system_minus_this"] > 4 * chrono["system_minus_this_se"]
    assert system["ndcg@10"] > chrono["ndcg@10"]
    # popularity: clearly on this world, though at 2,000 members the two come close (rules cost the system)
    assert popular["system_minus_this"] > 2 * popular["system_minus_this_se"]
    assert system["ndcg@10"] > popular["ndcg@10"]


def test_spr_holdout_reports_calibration_per_source(evaluated, system: TrainedSystem):
    spr = evaluated[0]["spr_holdout"]
    assert set(spr["by_source"]) == set(system.rankers)
    # stacked: the SPR trains on the 20% of the time between the FPRs' training and the split
    assert spr["rows_test"] > 1000 and 0.4 * spr["rows_test"] < spr["rows_train"] < spr["rows_test"]
    assert 0.6 < spr["auc"] <= 1.0
    for key in ("o_over_e", "o_over_e_true_p"):
        assert 0.5 < spr[key] < 2.0, key
        for src, m in spr["by_source"].items():
            assert math.isfinite(m[key]) and m[key] > 0, (src, key)
    # the clicks' 95% interval brackets the point estimate, and a slice's is wider than the whole's
    for m in (spr, *spr["by_source"].values()):
        low, high = m["o_over_e_ci"]
        assert 0 < low < m["o_over_e"] < high
    width = spr["o_over_e_ci"][1] - spr["o_over_e_ci"][0]
    assert all(m["o_over_e_ci"][1] - m["o_over_e_ci"][0] > width for m in spr["by_source"].values())
    # held out means after the split, in time
    assert (system.rows["timestamp"] >= system.split).sum() == spr["rows_test"]


def test_the_spr_also_trains_on_the_served_log_and_reports_its_calibration(evaluated, system: TrainedSystem):
    served, report = system.served, evaluated[0]["spr_holdout"]["served"]
    assert served["request_id"].nunique() == SERVED
    assert set(served["source"]) <= set(system.rankers) and set(served["logged_by"]) == {"served"}
    before = served["timestamp"] < system.split
    assert report["rows_train"] == before.sum() > 0 and report["rows_test"] == (~before).sum() > 0
    assert set(report["by_source"]) <= set(system.rankers) and 0.5 < report["o_over_e_true_p"] < 2.0
    # each log gets its own calibration layer; the simulator's rows say whose they are
    assert set(system.rows["logged_by"]) == {"simulator"}
    assert {policy for policy, _, _ in system.spr.calibration_} <= {"simulator", "served"}
    assert any(policy == "simulator" for policy, _, _ in system.spr.calibration_)
    # every request's slate: slots 0..k-1, distinct items, each with the same exact propensity 1/n of a
    # uniformly random order of the n candidates (k = 10 unless fewer were offered)
    for _, req in served.groupby("request_id"):
        n = round(1 / req["propensity"].iloc[0])
        assert (req["propensity"] == 1 / n).all() and len(req) == min(SLATE, n)
        assert sorted(req["position"]) == list(range(len(req))) and req["item_id"].is_unique
    # random order: the position says nothing about the FPR's score
    assert abs(np.corrcoef(served["position"], served["fpr_score"])[0, 1]) < 0.15
    # clicks are drawn at the truth's probability: within 4 standard errors over all slots
    p = served["true_p"].to_numpy()
    assert 0 < p.min() and p.max() < 1
    assert abs(served["label"].mean() - p.mean()) < 4 * np.sqrt((p * (1 - p)).sum()) / len(p)


def test_the_served_log_shows_what_the_fprs_answered_valued_by_the_truth(world, system, evaluated):
    """Logged for the evaluated requests: each slot is one of the FPRs' answers at that moment, with its
    source and score, its click probability is the examination of its slot times the truth's relevance
    (with the member's fatigue) the evaluation computed independently, and the seed fixes the draws."""
    _, checks = evaluated
    requests = pd.DataFrame(checks.requests[:20], columns=["request_id", "member_id", "timestamp"])
    log = served_log(world, system.rankers, requests, slate=SLATE, seed=3)
    assert set(log["request_id"]) == set(requests["request_id"])
    exam = world.truth.examination(np.arange(SLATE, dtype=np.float64))
    for row in log.itertuples():
        offered, relevance = checks.offered[row.request_id], checks.relevance[row.request_id]
        assert (row.source, row.fpr_score) == offered[row.item_id]
        assert row.propensity == 1 / len(relevance)
        assert row.true_p == pytest.approx(exam[row.position] * relevance[row.item_id], rel=1e-9)
    again = served_log(world, system.rankers, requests, slate=SLATE, seed=3)
    pd.testing.assert_frame_equal(log, again)
    other = served_log(world, system.rankers, requests, slate=SLATE, seed=4)
    assert not other["item_id"].equals(log["item_id"])


def test_each_served_request_draws_its_own_slate_and_clicks(world, system, evaluated):
    """A request's slate and clicks depend on the seed and that request only: logging fewer requests
    (or one whose candidates differ) leaves every other request's rows as they were."""
    _, checks = evaluated
    requests = pd.DataFrame(checks.requests[:20], columns=["request_id", "member_id", "timestamp"])
    log = served_log(world, system.rankers, requests, slate=SLATE, seed=3)
    kept = requests.iloc[1::2].reset_index(drop=True)
    fewer = served_log(world, system.rankers, kept, slate=SLATE, seed=3)
    assert set(fewer["request_id"]) == set(kept["request_id"])
    same = log[log["request_id"].isin(kept["request_id"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(fewer, same)


def test_fprs_retrained_daily_are_never_older_than_a_day_in_the_sprs_rows(world, system: TrainedSystem):
    retrained = train_system(world, 0.7, params=FAST, served_requests=40, fpr_retrain_s=DAY)
    fpr_split = world.traffic.split_time(0.5)
    end = float(world.traffic.log["timestamp"].max())
    for name, ranker in retrained.rankers.items():
        assert isinstance(ranker, RetrainedRanker), name
        assert isinstance(ranker.scorer, RetrainedScorer)
        deployed = np.asarray(ranker.scorer.deployed)
        np.testing.assert_allclose(deployed, fpr_split + DAY * np.arange(len(deployed)))
        assert deployed[-1] <= end < deployed[-1] + DAY
        # each model trained on everything before its deployment, nothing after
        ends = [trained_until(m) for m in ranker.scorer.models]
        assert all(e is not None and d - DAY < e < d for e, d in zip(ends, deployed, strict=True)), name
    for rows in (retrained.rows, retrained.served):
        age = rows["fpr_model_age_s"].dropna()
        assert len(age) and age.min() > 0 and age.max() < DAY + 3600  # a model is replaced within a day
    # trained once, the FPRs are days old by the end of the held-out rows
    assert system.rows["fpr_model_age_s"].max() > 2 * DAY
    with pytest.raises(ValueError, match="fpr_retrain_s"):
        train_system(world, 0.7, params=FAST, fpr_retrain_s=0.0)


def test_the_served_log_rejects_bad_arguments(world, system):
    requests = pd.DataFrame({"request_id": ["r"], "member_id": ["m"]})
    with pytest.raises(ValueError, match="timestamp"):
        served_log(world, system.rankers, requests)
    with pytest.raises(ValueError, match="slate"):
        served_log(world, system.rankers, requests.assign(timestamp=0.0), slate=0)
    with pytest.raises(ValueError, match="served_requests"):
        train_system(world, 0.7, params=FAST, served_requests=-1)


T0 = 1.7e9


def _event(kind: EventType, member: str, t: float, **kw) -> MemberEvent:
    return MemberEvent(
        event_id=f"e{t}-{member}-{kind.value}", event_type=kind, member_id=member, timestamp=T0 + t, **kw
    )


def test_simple_orders_put_member_cards_last_by_time_and_rank_by_engagements():
    inv = Inventory()
    for m in ("m1", "m2", "m3", "m4"):
        inv.apply(_event(EventType.MEMBER_JOINED, m, 0.0))
    inv.apply(_event(EventType.POST_CREATED, "m1", 10.0, item_id="old", item_type=ItemType.POST))
    inv.apply(_event(EventType.POST_CREATED, "m2", 20.0, item_id="new", item_type=ItemType.POST))
    for t, m in ((30.0, "m3"), (31.0, "m4")):
        inv.apply(_event(EventType.CLICK, m, t, item_id="old", item_type=ItemType.POST, item_actor_id="m1"))
    inv.apply(_event(EventType.CONNECTION_MADE, "m3", 40.0, item_id="m4", item_type=ItemType.MEMBER))
    assert chronological_order(inv, ["m3", "old", "new"]) == ["new", "old", "m3"]
    # "old" has 2 engagements; member m3 has 1 connection; "new" none
    assert popularity_order(inv, ["new", "m3", "old"]) == ["old", "m3", "new"]


def test_spr_holdout_reports_calibration_by_source_and_day(evaluated, system: TrainedSystem):
    spr = evaluated[0]["spr_holdout"]
    slices = spr["by_source_day"]
    values = [tuple(s["value"]) for s in slices]
    assert len(values) == len(set(values)) and {src for src, _, _ in values} == set(spr["by_source"])
    # every row once: the training rows on the days before the split, the held-out rows after it
    assert sum(s["rows"] for s in slices) == spr["rows_train"] + spr["rows_test"]
    assert max(d for _, d, held in values if not held) <= min(d for _, d, held in values if held)
    for src, m in spr["by_source"].items():
        held = [s for s in slices if s["value"][0] == src and s["value"][2]]
        assert sum(s["rows"] for s in held) == m["rows"] and sum(s["observed"] for s in held) == m["engaged"]
        # the days' ratios pool to the held-out one: O/E is a ratio of sums
        expected = sum(s["expected"] for s in held)
        assert m["engaged"] / expected == pytest.approx(m["o_over_e"])


def test_spr_holdout_reports_calibration_of_the_items_new_to_each_fpr(evaluated, system: TrainedSystem):
    """The items created after their FPR's training are counted from the rows' own ages, held out apart
    from training, and pool to each source's held-out ratio."""
    spr = evaluated[0]["spr_holdout"]
    slices = {tuple(s["value"]): s for s in spr["by_source_new"]}
    held = system.rows[system.rows["timestamp"] >= system.split]
    new = (held["item_age_s"] < held["fpr_model_age_s"]).to_numpy()
    assert new.any() and not new.all()  # the world makes items after the FPRs' split
    for src, m in spr["by_source"].items():
        mine = (held["source"] == src).to_numpy()
        for flag in (False, True):
            rows = held[mine & (new == flag)]
            cell = slices.get((src, flag, True))
            assert (cell["rows"] if cell else 0) == len(rows)
            if cell:
                assert cell["observed"] == rows["label"].sum()
                assert cell["o_over_e_true_p"] * cell["expected"] == pytest.approx(rows["true_p"].sum())
        cells = [slices[(src, flag, True)] for flag in (False, True) if (src, flag, True) in slices]
        assert sum(c["observed"] for c in cells) / sum(c["expected"] for c in cells) == pytest.approx(m["o_over_e"])
    # every training row once as well
    assert sum(s["rows"] for s in spr["by_source_new"]) == spr["rows_train"] + spr["rows_test"]


def test_the_fpr_oracle_counts_each_members_impressions_of_each_item_for_the_truths_fatigue():
    inv = ImpressionCountingInventory()
    for m in ("m1", "m2", "m3"):
        inv.apply(_event(EventType.MEMBER_JOINED, m, 0.0))
    inv.apply(_event(EventType.POST_CREATED, "m3", 1.0, item_id="p", item_type=ItemType.POST))
    seen = dict(item_id="p", item_type=ItemType.POST, item_actor_id="m3")
    for t, m in ((2.0, "m1"), (3.0, "m1"), (4.0, "m2")):
        inv.apply(_event(EventType.IMPRESSION, m, t, **seen))
    inv.apply(_event(EventType.CLICK, "m1", 5.0, **seen))  # a click is not another impression
    assert inv.prior_impressions("m1", ["p", "q"]).tolist() == [2.0, 0.0]
    assert inv.prior_impressions("m2", ["p"]).tolist() == [1.0]
    assert inv.prior_impressions("m3", ["p"]).tolist() == [0.0]
    assert "p" in inv.seen["m1"]  # still the inventory the FPRs read
