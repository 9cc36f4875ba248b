"""``feedrank bench --smoke``: every benchmark of the suite runs against the real Kafka and Redis and
reports its figures (CI checks that they run; their speed is measured by the full suite)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from benchmarks.suite import SUITE, TARGETS

pytestmark = pytest.mark.integration


def test_the_smoke_suite_runs_every_benchmark_and_summarizes_each_target(base_settings, tmp_path):
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "-m", "feedrank.cli", "bench", "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        env=base_settings.child_env(),
        timeout=900,
    )
    logs = {p.name: p.read_text()[-2000:] for p in out.glob("*.log")}
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:], logs)
    smoke = [b.name for b in SUITE if b.smoke is not None]
    assert sorted(p.stem for p in out.glob("*.json") if p.stem != "summary") == sorted(smoke)

    feed = json.loads((out / "feed-50.json").read_text())
    # every counted request got its feed, from every FPR, with candidates from all of them
    assert feed["counted"] > 0 and feed["received"] == feed["counted"] and feed["lost"] == 0
    assert feed["fell_open"] == 0
    assert feed["candidates_per_request"] > 20 and feed["mean_items"] > 0
    lat = feed["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert {"mixer", "kafka", "redis", "fpr-network"} <= set(feed["cpu_share"])

    summary = json.loads((out / "summary.json").read_text())
    assert summary["smoke"] is True
    measured = {r["target"]: r for r in summary["targets"]}
    expected = {t.label for t in TARGETS if t.bench in smoke}
    assert set(measured) == expected
    for r in measured.values():
        assert math.isfinite(r["measured"]) and r["measured"] > 0, r
    md = (out / "summary.md").read_text()
    assert "smoke run" in md and all(label in md for label in expected)
