"""`feedrank train spr` learns only from FPR scores of traffic the FPR models did not train on."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedrank.settings import FPR_SHARE, Settings
from rankers.training import LoggedTraffic
from services.fpr_training import train_fpr
from services.model_store import ModelStore
from services.traffic import SimulatedTraffic
from services.train_spr import spr_training_set, train_spr

SMALL_NETWORK = {"n_estimators": 30}


@pytest.fixture(scope="module")
def traffic() -> LoggedTraffic:
    return SimulatedTraffic(members=200, requests=500, seed=3).logged()


def settings_with_network_fpr(root: Path, traffic: LoggedTraffic) -> Settings:
    settings = Settings(models_path=root / "models", state_dir=root / "state")
    train_fpr(settings, "network", traffic, SMALL_NETWORK, show_progress=False)
    return settings


def test_rows_start_where_the_fpr_models_training_traffic_ends(tmp_path: Path, traffic: LoggedTraffic):
    fpr_traffic = traffic.first(FPR_SHARE)
    settings = settings_with_network_fpr(tmp_path, fpr_traffic)
    end = max(e.timestamp for e in fpr_traffic.events)
    rows = spr_training_set(settings, traffic.events)
    untrained = spr_training_set(Settings(models_path=tmp_path / "none", state_dir=tmp_path / "s2"), traffic.events)
    assert rows["timestamp"].min() > end > untrained["timestamp"].min()  # baselines saw no traffic: every row
    assert rows["timestamp"].max() == untrained["timestamp"].max()
    version, report = train_spr(settings, traffic.events, "test")
    assert report["rows_train"] + report["rows_test"] == len(rows)
    assert ModelStore(settings.model_dir).load("spr", version).model.sources_


def test_fprs_trained_on_all_the_traffic_leave_the_spr_a_clear_error(tmp_path: Path, traffic: LoggedTraffic):
    settings = settings_with_network_fpr(tmp_path, traffic)
    with pytest.raises(ValueError, match=r"only 0 training rows .* where the FPR models' training traffic ends"):
        spr_training_set(settings, traffic.events)


def test_a_share_of_the_traffic_is_its_earlier_part(traffic: LoggedTraffic):
    part = traffic.first(0.5)
    assert 0 < len(part.log) < len(traffic.log) and part.log["timestamp"].max() < traffic.log["timestamp"].max()
    assert traffic.first(1.0) is traffic
    with pytest.raises(ValueError, match=r"share of the traffic must be in \(0, 1\]"):
        traffic.first(0.0)
