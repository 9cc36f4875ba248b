"""The click model, the featurizer and the trainer, on a small simulated world."""

from __future__ import annotations

import io
import math

import joblib
import numpy as np
import pytest
from sklearn.base import clone

from evaluation.fpr_oracle import SimulatedWorld, oracle_eval
from rankers.baselines import RecencyScorer
from rankers.calibration import observed_over_expected
from rankers.inventory import Inventory
from rankers.network.features import FEATURES, NetworkFeaturizer, SkillSpace
from rankers.network.model import NetworkClickModel
from rankers.network.ranker import NetworkScorer, build
from rankers.network.train import TrainingDataError, train
from rankers.training import LoggedTraffic, NoProgress, TrainedFpr


def _logistic_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    p = 1 / (1 + np.exp(-(-2.0 + 1.5 * x[:, 0] - x[:, 1])))
    return x, (rng.random(n) < p).astype(int)


def test_click_model_follows_sklearn_api_and_calibrates() -> None:
    model = NetworkClickModel(n_estimators=80, num_leaves=4)
    assert clone(model).get_params() == model.get_params()
    assert not hasattr(model, "booster_")  # nothing happens in the constructor
    x, y = _logistic_data(6000, 0)
    xc, yc = _logistic_data(3000, 1)
    xt, yt = _logistic_data(3000, 2)
    model.fit(x, y, calibration_set=(xc, yc))
    proba = model.predict_proba(xt)
    assert proba.shape == (3000, 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert 0.85 < observed_over_expected(yt, proba[:, 1]) < 1.15
    # Platt never reorders: calibrated scores rank exactly like the margin
    assert np.array_equal(np.argsort(model.decision_function(xt)), np.argsort(proba[:, 1]))


def test_skill_space_places_skills_by_their_holders_industry(final_inventory: Inventory) -> None:
    space = SkillSpace.fit(final_inventory)
    profile = next(p for p in final_inventory.members.values() if p.skills and p.industry)
    me = space.of_members(final_inventory, [profile.member_id])[0]
    own = space.of_skill_sets([[s] for s in sorted(profile.skills)])
    others = [s for s in space.index if s not in profile.skills]
    foreign = space.of_skill_sets([[s] for s in others])
    assert np.isclose(np.linalg.norm(me), 1.0)
    assert (own @ me).mean() > (foreign @ me).mean()
    assert not space.of_members(final_inventory, ["nobody"]).any()  # unknown: no direction, no error


def test_scores_are_probabilities_with_features(scorer: NetworkScorer, final_inventory: Inventory) -> None:
    inv, now = final_inventory, final_inventory.latest
    ranker = build(model=scorer)
    member = max(inv.members, key=lambda m: len(ranker.candidate_ids(inv, m, now)))
    ids = ranker.candidate_ids(inv, member, now)
    assert len(ids) >= 5
    p, feats = scorer.score(inv, member, ids, now)
    assert p.shape == (len(ids),) and np.all((p > 0) & (p < 1))
    assert set(feats) == set(FEATURES)
    assert all(len(v) == len(ids) and np.isfinite(v).all() for v in feats.values())
    assert np.all(feats["connected"] + feats["follows_actor"] >= 1)  # only the member's own network
    out = ranker.top_k(inv, member, now, k=3)
    assert len(out) == 3 and [c.score for c in out] == sorted((c.score for c in out), reverse=True)
    assert out[0].score == pytest.approx(float(p.max()))


def test_unknown_member_and_unknown_items_never_fail(scorer: NetworkScorer, final_inventory: Inventory) -> None:
    inv, now = final_inventory, final_inventory.latest
    out = build(model=scorer).top_k(inv, "never-seen-member", now, k=20)
    assert len(out) == 20 and all(0.0 <= c.score <= 1.0 for c in out)
    assert all(inv.items[c.item_id].item_type == "post" for c in out)
    p, feats = scorer.score(inv, "never-seen-member", ["no-such-post"], now)
    assert p.shape == (1,) and 0 < p[0] < 1 and all(np.isfinite(v).all() for v in feats.values())
    p, _ = scorer.score(inv, "never-seen-member", [], now)
    assert p.shape == (0,)


def test_trainer_reports_held_out_metrics_and_round_trips(trained: TrainedFpr, final_inventory: Inventory) -> None:
    m = trained.metrics
    assert {"auc", "log_loss", "o_over_e", "rows"} <= set(m)
    assert m["auc"] > 0.6 and 0.7 < m["o_over_e"] < 1.4 and m["rows"] > 100
    assert math.isfinite(m["log_loss"])
    buf = io.BytesIO()
    joblib.dump(trained.scorer, buf)
    buf.seek(0)
    loaded = joblib.load(buf)
    loaded.version = "20260101-abc"  # the service stamps the artifact version on the scorer
    inv, now = final_inventory, final_inventory.latest
    member = next(m for m in sorted(inv.members) if inv.connections.get(m))
    ids = build(model=loaded).candidate_ids(inv, member, now)
    assert np.array_equal(loaded.score(inv, member, ids, now)[0], trained.scorer.score(inv, member, ids, now)[0])
    assert build(model=loaded).model_version == "network/20260101-abc"


def test_featurizer_is_fitted_state_not_serving_state(scorer: NetworkScorer) -> None:
    assert isinstance(scorer.featurizer, NetworkFeaturizer)
    assert scorer.featurizer.skills.dim > 1 and len(scorer.featurizer.skills.index) > 10


def test_trained_model_beats_recency_against_the_oracle(small_world: SimulatedWorld) -> None:
    out = oracle_eval(small_world, train, lambda m: build(model=m), RecencyScorer(), n_requests=150)
    assert out["requests"] > 100
    assert out["model"]["ndcg@10"] > out["baseline"]["ndcg@10"] + 0.05


def test_trainer_refuses_traffic_without_posts(small_world: SimulatedWorld) -> None:
    log = small_world.traffic.log
    no_posts = LoggedTraffic(small_world.traffic.events[:10], log[log["item_type"] != "post"].head(50))
    with pytest.raises(TrainingDataError, match="post impressions"):
        train(no_posts, {}, NoProgress())
