"""The courses FPR: its source, its scores, its trainer against the simulator's oracle, GLMix's random
effects and the offline interaction model, each against popularity where it has to beat it."""

from __future__ import annotations

import io
import time

import joblib
import numpy as np
import pandas as pd
import pytest

from evaluation.fpr_oracle import oracle_eval, simulate
from evaluation.interactions import evaluate_interactions
from feedrank.contracts import EventType, ItemType, MemberEvent
from rankers.baselines import PopularityScorer
from rankers.cold_start import PopularItems
from rankers.courses.features import DENSE, PRIOR_RATE, PRIOR_WEIGHT, raw_features
from rankers.courses.glmix import GLMix
from rankers.courses.offline import CoursesInteractionModel
from rankers.courses.ranker import CatalogSource, CoursesScorer, build
from rankers.courses.settings import load_settings
from rankers.courses.train import point_in_time_rows, train
from rankers.inventory import Inventory
from rankers.training import LoggedTraffic, TrainedFpr

NOW = time.time()
_n = iter(range(10**6))


def ev(event_type: EventType, member_id: str, **kw: object) -> MemberEvent:
    return MemberEvent(event_id=f"e{next(_n)}", event_type=event_type, member_id=member_id, timestamp=NOW - 3600, **kw)


def course(inv: Inventory, cid: str, actor: str = "learning", **attrs: object) -> None:
    attributes = {"skills": ["python"], "category": "tech", "difficulty": "beginner", **attrs}
    inv.apply(ev(EventType.COURSE_PUBLISHED, actor, item_id=cid, item_type=ItemType.COURSE, attributes=attributes))


def small_catalog() -> Inventory:
    inv = Inventory()
    inv.apply(ev(EventType.MEMBER_JOINED, "m1", attributes={"skills": ["python"], "industry": "tech"}))
    inv.apply(ev(EventType.MEMBER_JOINED, "m2", attributes={"skills": ["sales"], "industry": "retail"}))
    course(inv, "c_seen")
    course(inv, "c_open", skills=["python", "ml"])
    course(inv, "c_private", visibility="connections")  # the actor is no connection of m1
    course(inv, "c_blocked", actor="m2")
    inv.apply(ev(EventType.BLOCK, "m1", item_id="m2", item_type=ItemType.MEMBER))
    inv.apply(ev(EventType.IMPRESSION, "m1", item_id="c_seen", item_type=ItemType.COURSE, item_actor_id="learning"))
    return inv


def test_source_never_returns_seen_or_invisible_courses() -> None:
    inv = small_catalog()
    assert list(CatalogSource().candidates(inv, "m1", NOW)) == ["c_open"]
    ids = [c.item_id for c in build().top_k(inv, "m1", NOW)]
    assert ids == ["c_open"]


def test_course_rate_counts_first_impressions_and_training_marks_repeats() -> None:
    inv = small_catalog()
    for member in ("m1", "m1", "m1", "m2"):
        inv.apply(
            ev(EventType.IMPRESSION, member, item_id="c_open", item_type=ItemType.COURSE, item_actor_id="learning")
        )
    inv.apply(ev(EventType.CLICK, "m2", item_id="c_open", item_type=ItemType.COURSE, item_actor_id="learning"))
    dense, _, _ = raw_features(inv, "m1", ["c_open"])
    rate = dense[0, DENSE.index("ctr")]
    # one click on two first impressions, whatever the repeats: the rate of (1 + prior) / (2 + weight)
    p = (1 + PRIOR_RATE * PRIOR_WEIGHT) / (2 + PRIOR_WEIGHT)
    assert rate == pytest.approx(np.log(p / (1 - p)))
    assert dense[0, DENSE.index("shown_before")] == 0.0  # serving offers unseen courses only

    events = [
        ev(EventType.MEMBER_JOINED, "m1", attributes={"skills": ["python"], "industry": "tech"}),
        ev(EventType.COURSE_PUBLISHED, "learning", item_id="c1", item_type=ItemType.COURSE, attributes={}),
    ]
    log = pd.DataFrame(
        {
            "request_id": ["r1", "r2", "r3", "r3"],
            "member_id": ["m1", "m1", "m1", "m2"],
            "timestamp": [NOW, NOW + 1, NOW + 2, NOW + 2],
            "position": [0, 0, 0, 0],
            "item_id": ["c1"] * 4,
            "item_type": [ItemType.COURSE.value] * 4,
            "source": ["courses"] * 4,
            "clicked": [0, 0, 1, 1],
        }
    )
    frame, _ = point_in_time_rows(LoggedTraffic(events, log))
    assert frame.loc[frame["member"] == "m1", "shown_before"].tolist() == pytest.approx(np.log1p([0, 1, 2]).tolist())
    assert frame.loc[frame["member"] == "m2", "shown_before"].tolist() == [0.0]


def test_untrained_build_serves_popularity_with_cold_start() -> None:
    fpr = build()
    assert isinstance(fpr.scorer, PopularityScorer)
    assert isinstance(fpr.cold_start, PopularItems) and fpr.serves == ItemType.COURSE
    assert fpr.model_version == "courses/popularity"


def test_settings_override_and_reject_unknown_keys() -> None:
    assert load_settings({"ncf_epochs": 2})["ncf"]["epochs"] == 2
    assert load_settings({"glmix": {"l2_member": 3.0}})["glmix"]["l2_member"] == 3.0
    assert load_settings({"epochs": 3})["ncf"]["epochs"] == 3  # a key only one section has
    with pytest.raises(KeyError):
        load_settings({"ncf_epoch": 2})
    with pytest.raises(KeyError, match="ambiguous"):
        load_settings({"C": 1.0})


# ------------------------------------------------------------------------------------- trained model
@pytest.fixture(scope="module")
def evaluated() -> tuple[dict, TrainedFpr, Inventory, float]:
    """One small simulated world: the oracle evaluation, the scorer it trained and the final inventory."""
    sw = simulate(members=400, requests=4000, days=3, seed=1)
    trained: list[TrainedFpr] = []

    def trainer(traffic, params, progress) -> TrainedFpr:  # type: ignore[no-untyped-def]
        trained.append(train(traffic, params, progress))
        return trained[-1]

    res = oracle_eval(sw, trainer, lambda m: build(model=m), PopularityScorer(), n_requests=200)
    inv = Inventory()
    for e in sw.traffic.events:
        inv.apply(e)
    return res, trained[0], inv, inv.latest


def test_trainer_beats_popularity_against_the_oracle(evaluated) -> None:  # type: ignore[no-untyped-def]
    res, trained, _, _ = evaluated
    assert res["requests"] > 50
    assert res["model"]["ndcg@10"] > res["baseline"]["ndcg@10"] + 0.02, res
    m = trained.metrics
    for part in ("ncf_", "glmix_", ""):
        assert 0.0 < m[f"{part}log_loss"] < 1.0 and 0.5 < m[f"{part}o_over_e"] < 1.5 and f"{part}auc" in m


def test_trained_scorer_pickles_and_scores_probabilities(evaluated) -> None:  # type: ignore[no-untyped-def]
    _, trained, inv, now = evaluated
    scorer = trained.scorer
    assert isinstance(scorer, CoursesScorer) and isinstance(scorer.version, str)
    buf = io.BytesIO()
    joblib.dump(scorer, buf)
    buf.seek(0)
    loaded = joblib.load(buf)
    member = sorted(inv.members)[0]
    ids = list(CatalogSource().candidates(inv, member, now))
    p, feats = scorer.score(inv, member, ids, now)
    p2, _ = loaded.score(inv, member, ids, now)
    np.testing.assert_allclose(p, p2)
    assert p.shape == (len(ids),) and np.all((p >= 0) & (p <= 1)) and np.isfinite(p).all()
    assert all(len(v) == len(ids) for v in feats.values())
    fpr = build(model=loaded)
    top = fpr.top_k(inv, member, now, k=5)
    assert [c.score for c in top] == sorted((c.score for c in top), reverse=True)


def test_unknown_member_and_course_get_scores_not_errors(evaluated) -> None:  # type: ignore[no-untyped-def]
    _, trained, inv, now = evaluated
    top = build(model=trained.scorer).top_k(inv, "never-seen", now, k=10)
    assert len(top) == 10 and all(0.0 <= c.score <= 1.0 for c in top)
    p, _ = trained.scorer.score(inv, "never-seen", ["no-such-course"], now)
    assert p.shape == (1,) and 0.0 <= p[0] <= 1.0


# ---------------------------------------------------------------------------------------------- GLMix
def test_glmix_member_coefficients_follow_the_members_clicks() -> None:
    """Overall, x does not matter; member a clicks only x=1 courses, member b only x=0 ones."""
    rng = np.random.default_rng(0)
    rows = []
    for member in ["a", "b"] + [f"o{i}" for i in range(20)]:
        for j in range(60):
            x = j % 2
            if member == "a":
                y = int(x == 1 and rng.random() < 0.5)
            elif member == "b":
                y = int(x == 0 and rng.random() < 0.5)
            else:
                y = int(rng.random() < 0.2)
            rows.append({"member": member, "course": f"c{j % 6}", "x": float(x), "y": y})
    df = pd.DataFrame(rows)
    g = GLMix(member_features=["x"], l2_member=1.0, l2_course=100.0).fit(df[["member", "course", "x"]], df["y"])
    a, b, o = (g.member_coefficients(m)["x"] for m in ("a", "b", "o0"))
    assert a > 1.0 and b < -1.0 and abs(o) < 0.5 * min(a, -b)
    assert g.member_coefficients("nobody") == {"intercept": 0.0, "x": 0.0}
    proba = g.predict_proba(pd.DataFrame({"member": ["a", "b"], "course": ["c1", "c1"], "x": [1.0, 1.0]}))[:, 1]
    assert proba[0] > proba[1]


# -------------------------------------------------------------------------------------------- offline
def test_offline_model_beats_popularity_on_clustered_clicks() -> None:
    """Members engage mostly within their topic; popular items are spread over topics."""
    rng = np.random.default_rng(0)
    n_topics, per_topic = 6, 10
    appeal = rng.gamma(1.0, 1.0, n_topics * per_topic)
    rows = []
    for m in range(300):
        topic = m % n_topics
        own = np.arange(topic * per_topic, (topic + 1) * per_topic)
        for t in range(4):
            pool = own if rng.random() < 0.8 else np.arange(n_topics * per_topic)
            item = rng.choice(pool, p=appeal[pool] / appeal[pool].sum())
            rows.append({"member_id": f"m{m}", "item_id": f"c{item}", "timestamp": NOW + m * 10 + t})
    res = evaluate_interactions(CoursesInteractionModel(), pd.DataFrame(rows))
    assert res["model"]["ndcg@10"] > res["popularity"]["ndcg@10"] + 0.05, res
