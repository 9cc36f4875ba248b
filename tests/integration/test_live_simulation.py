"""The live system as the logging policy: a simulated world published to Kafka, its members served by
the running pipeline, the mixer's exploration with exact propensities, the events flowing back, and
the mixer's own impression log of the same traffic."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rankers.registry import load_config
from services.impression_log import read_impression_log
from simulator.logs import read_log

from .conftest import feedrank_cli, running_services


@pytest.fixture(scope="module")
def empty_pipeline(base_settings, generator, tmp_path_factory):
    """Every service running on a fresh namespace with no traffic yet; the mixer logs impressions 3 s
    after serving them."""
    with running_services(
        base_settings, tmp_path_factory.mktemp("live"), generator, impression_window_s=3.0
    ) as running:
        yield running


def test_live_policy_logs_the_mixers_propensities_and_the_mixer_logs_the_same_impressions(empty_pipeline, tmp_path):
    s, sup = empty_pipeline
    slate, requests = 5, 48
    args = [
        "simulate",
        "--policy",
        "live",
        "--members",
        "300",
        "--requests",
        str(requests),
        "--slate-size",
        str(slate),
        "--batch-size",
        "16",
        "--seed",
        "3",
        "--days",
        "2",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    out = feedrank_cli(s, *args, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["published"] == report["events"] > 0
    assert sup.dead() == {}

    log = read_log(tmp_path / "impressions.parquet")
    assert log["request_id"].nunique() == requests
    assert log["request_id"].str.fullmatch(r"[0-9a-f]{32}").all()  # the mixer's request ids
    assert log.groupby("request_id").size().max() == slate
    assert set(log["source"]) <= {"network", "jobs", "courses", "people"} and log["source"].nunique() >= 3
    # The mixer's pCTR of each served item is logged as the prediction.
    assert log["predicted"].notna().all() and log["predicted"].between(0, 1).all()
    # Exact propensities of the mixer's epsilon-greedy rule: a greedy slot (1 - eps) + eps / n, an explored
    # one eps / n, for the n slots of the request's exploration pool.
    eps = next(r.epsilon for r in load_config(s.pipeline_config).build_rules() if r.name == "exploration")
    n = (eps / log["propensity"]).where(log["propensity"] < 0.5, eps / (log["propensity"] - 1 + eps))
    assert np.allclose(n, n.round()) and (n.round() >= 1).all()
    assert (log["propensity"] > 0.5).mean() > 0.8
    feeds = pd.read_parquet(tmp_path / "events.parquet", columns=["event_type"])
    assert (feeds["event_type"] == "impression").sum() == len(log)
    assert log["true_p"].between(0, 1).all()
    assert pq.read_metadata(tmp_path / "events.parquet").num_rows == report["events"]

    # The mixer joined what it served with the impressions and actions that came back: the same rows.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        mixer_log = read_impression_log(s.impression_dir).to_pandas()
        if len(mixer_log) >= len(log):
            break
        time.sleep(1)
    key = ["request_id", "item_id"]
    joined = log.merge(mixer_log, on=key, suffixes=("", "_mixer"), validate="one_to_one")
    assert len(joined) == len(log) == len(mixer_log)
    for c in ("position", "propensity", "clicked", "applied", "connected", "hidden"):
        assert (joined[c] == joined[f"{c}_mixer"]).all(), c
    assert np.allclose(joined["predicted"], joined["predicted_mixer"]) and np.allclose(
        joined["true_p"], joined["true_p_mixer"]
    )
    assert mixer_log["model_version"].str.startswith("spr/").all()
