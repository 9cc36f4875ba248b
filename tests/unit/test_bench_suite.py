"""The benchmark suite's own logic: targets, the summary table, and the BENCHMARKS.md section."""

from __future__ import annotations

import json
import math

from benchmarks.suite import MARK_BEGIN, MARK_END, TARGETS, Target, markdown, summarize, write_section


def test_a_target_is_met_on_its_side_of_the_goal_and_never_by_a_missing_figure():
    low = Target("p99", "b", lambda r: r["x"], 50.0, False, "ms")
    high = Target("rate", "b", lambda r: r["x"], 10.0, True, "events/s")
    assert low.met(50.0) and not low.met(50.1) and not low.met(math.inf) and not low.met(math.nan)
    assert high.met(10.0) and not high.met(9.9) and not high.met(math.nan)


def test_a_lost_feed_request_fails_the_latency_target_whatever_the_percentiles(tmp_path):
    feed = {"lost": 1, "latency_ms": {"p99": 3.0}}
    (tmp_path / "feed-50.json").write_text(json.dumps(feed))
    rows = summarize(tmp_path, smoke=False, machine="m")["targets"]
    assert [r["target"] for r in rows] == ["feed p99 at 50 requests/s"]
    assert rows[0]["met"] is False and rows[0]["measured"] == math.inf
    assert "lost requests" in markdown(summarize(tmp_path, smoke=False, machine="m"))


def test_summary_reads_each_benchmark_result_and_skips_missing_ones(tmp_path):
    (tmp_path / "online-read.json").write_text(json.dumps({"fast_over_raw_p50": 1.4}))
    (tmp_path / "offline-eval.json").write_text(
        json.dumps(
            {
                "rows": 1_000_000,
                "commands": {
                    "eval oe (overall, interval, reliability table)": {"median_s": 0.5},
                    "eval replay (replay, IPS, SNIPS, 200 bootstrap draws)": {"median_s": 2.0},
                },
            }
        )
    )
    summary = summarize(tmp_path, smoke=True, machine="2 cores")
    got = {r["target"]: (r["measured"], r["met"]) for r in summary["targets"]}
    assert got == {
        "serving feature read / raw Redis read (p50)": (1.4, True),
        "eval oe rows/s": (2_000_000.0, True),
        "eval replay (replay, IPS, SNIPS) rows/s": (500_000.0, False),
    }
    assert {t.bench for t in TARGETS} >= {"online-read", "offline-eval"}
    md = markdown(summary)
    assert "smoke run" in md and "2 cores" in md and "| eval replay (replay, IPS, SNIPS) rows/s |" in md
    assert "**no**" in md


def test_write_section_replaces_only_the_marked_block_or_appends_it(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nintro\n")
    write_section(path, "first\n")
    assert path.read_text() == f"# Benchmarks\n\nintro\n\n{MARK_BEGIN}\nfirst\n{MARK_END}\n"
    path.write_text(path.read_text() + "\n## Later section\n")
    write_section(path, "second\n")
    text = path.read_text()
    assert "first" not in text and f"{MARK_BEGIN}\nsecond\n{MARK_END}" in text
    assert text.startswith("# Benchmarks\n\nintro\n") and text.endswith("## Later section\n")
