"""Trained FPR scorers are versioned artifacts: the service serves the current one and says which."""

from __future__ import annotations

import time

import numpy as np

from feedrank.contracts import FeedRequest
from feedrank.settings import Settings
from rankers.mixer.mixer import candidate_columns
from rankers.mixer.spr import new_to_fpr
from rankers.registry import load_config
from services.fpr_service import FprService, load_ranker
from services.fpr_training import train_fpr
from services.model_store import ModelStore
from services.traffic import SimulatedTraffic


def test_service_serves_the_current_trained_version_else_the_baseline(tmp_path):
    s = Settings(models_path=tmp_path / "models")
    spec = load_config(s.pipeline_config).fprs["courses"]
    assert load_ranker(s, spec).model_version == "courses/popularity"  # nothing trained yet
    assert not ModelStore(s.model_dir).exists("fpr-courses")

    traffic = SimulatedTraffic(members=200, requests=400, seed=3).logged()
    first, metrics = train_fpr(s, "courses", traffic, show_progress=False)
    second, _ = train_fpr(s, "courses", traffic, show_progress=False)
    assert first != second and 0.0 < metrics["auc"] < 1.0
    assert ModelStore(s.model_dir).exists("fpr-courses")
    assert ModelStore(s.model_dir).load("fpr-courses").meta["metrics"]["auc"] > 0

    service = FprService(s, load_ranker(s, spec))
    for e in traffic.events:
        service.inventory.apply(e)
    member = traffic.log["member_id"].iloc[0]
    answer = service.answer(FeedRequest(request_id="r1", member_id=member, requested_at=time.time()))
    assert answer.model_version == f"courses/{second}"  # CURRENT points at the latest
    # the answer says where the model's training traffic ends: the second pass flags items created since
    assert answer.trained_until == traffic.events[-1].timestamp
    assert answer.learns_items and answer.new_items_after == answer.trained_until  # courses are learned one by one
    assert load_ranker(s, spec).trained_until == traffic.events[-1].timestamp
    assert answer.candidates and all(0.0 <= c.score <= 1.0 for c in answer.candidates)
    assert [c.score for c in answer.candidates] == sorted((c.score for c in answer.candidates), reverse=True)


def test_no_item_is_new_to_a_model_that_sees_items_only_through_features(tmp_path):
    """The network model scores posts from features any post has: its answer still says where its
    training traffic ends, but the mixer's candidates carry no age of it for the second pass to flag new
    posts by (flagged, new posts stood for young ones in training and for any age later)."""
    s = Settings(models_path=tmp_path / "models")
    spec = load_config(s.pipeline_config).fprs["network"]
    traffic = SimulatedTraffic(members=200, requests=400, seed=3).logged()
    train_fpr(s, "network", traffic, show_progress=False)
    service = FprService(s, load_ranker(s, spec))
    for e in traffic.events:
        service.inventory.apply(e)
    now = traffic.events[-1].timestamp + 3600.0
    member = next(m for m in service.inventory.members if service.ranker.candidate_ids(service.inventory, m, now))
    answer = service.answer(FeedRequest(request_id="r1", member_id=member, requested_at=now), now=now)
    assert answer.candidates and answer.trained_until == traffic.events[-1].timestamp
    assert not answer.learns_items and answer.new_items_after is None
    cands = candidate_columns([(answer.source, answer.candidates)], now, {answer.source: answer.new_items_after})
    assert np.isnan(cands["fpr_model_age_s"]).all() and not new_to_fpr(cands).any()
    # the courses model learns items: its candidates carry the age, and a course created since is new
    courses = load_ranker(s, load_config(s.pipeline_config).fprs["courses"])
    assert courses.new_items_after() is None  # untrained: the baseline, which knows no training end
    stamped = candidate_columns([("courses", answer.candidates)], now, {"courses": answer.trained_until})
    np.testing.assert_allclose(stamped["fpr_model_age_s"], 3600.0)


class _StaleScorer:
    """A model pickled by an older release, trained on features this code no longer computes."""

    version = "old"

    def compatible(self) -> bool:
        return False


def test_a_model_trained_on_other_features_is_not_served(tmp_path):
    s = Settings(models_path=tmp_path / "models")
    spec = load_config(s.pipeline_config).fprs["jobs"]
    ModelStore(s.model_dir).save(spec.artifact, _StaleScorer(), {"metrics": {}})
    assert load_ranker(s, spec).model_version == "jobs/popularity"  # the baseline, not a crash at scoring
