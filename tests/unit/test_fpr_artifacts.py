"""Trained FPR scorers are versioned artifacts: the service serves the current one and says which."""

from __future__ import annotations

import time

from feedrank.contracts import FeedRequest
from feedrank.settings import Settings
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
    assert load_ranker(s, spec).trained_until == traffic.events[-1].timestamp
    assert answer.candidates and all(0.0 <= c.score <= 1.0 for c in answer.candidates)
    assert [c.score for c in answer.candidates] == sorted((c.score for c in answer.candidates), reverse=True)


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
