"""The live system as a logging policy: a simulated world published to Kafka, its members served by
the running pipeline, exploration with exact propensities, and the events flowing back."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest

from simulator.logs import read_log

from .conftest import running_services


@pytest.fixture(scope="module")
def empty_pipeline(base_settings, generator, tmp_path_factory):
    """Every service running on a fresh namespace with no traffic yet."""
    with running_services(base_settings, tmp_path_factory.mktemp("live"), generator) as running:
        yield running


def test_live_policy_logs_exact_propensities_and_feeds_back_events(empty_pipeline, tmp_path):
    s, sup = empty_pipeline
    eps, slate, requests = 0.25, 5, 48
    cmd = [
        sys.executable,
        "-m",
        "feedrank.cli",
        "simulate",
        "--policy",
        "live",
        "--epsilon",
        str(eps),
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
    out = subprocess.run(cmd, capture_output=True, text=True, env=s.child_env(), timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["published"] == report["events"] > 0
    assert sup.dead() == {}

    log = read_log(tmp_path / "impressions.parquet")
    assert log["request_id"].nunique() == requests
    assert log.groupby("request_id").size().max() == slate
    assert set(log["source"]) <= {"network", "jobs", "courses", "people"} and log["source"].nunique() >= 3
    # The mixer's pCTR of each served item is logged as the prediction.
    assert log["predicted"].notna().all() and log["predicted"].between(0, 1).all()
    # Exact propensities of epsilon-greedy around the system's feed: the greedy slot of a feed of n
    # items has (1 - eps) + eps / n, any other eps / n.
    feeds = pd.read_parquet(tmp_path / "events.parquet", columns=["event_type"])
    assert (feeds["event_type"] == "impression").sum() == len(log)
    n_items = 2 * slate  # the live policy asks for feeds twice the slate size
    greedy, explore = (1 - eps) + eps / n_items, eps / n_items
    on_greedy = (log["propensity"] - greedy).abs() < 1e-9
    explored = (log["propensity"] - explore).abs() < 1e-9
    assert (on_greedy | explored).all()
    assert on_greedy.mean() > 0.5
    # Members acted on what they were shown, by the truth.
    assert log["true_p"].between(0, 1).all()
    assert pq.read_metadata(tmp_path / "events.parquet").num_rows == report["events"]
