"""`feedrank eval oe`: O/E overall and per slice, its clustered interval, the reliability table, the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from evaluation.observed_expected import (
    evaluate_oe,
    ratio_stats,
    reliability_figure,
    reliability_table,
    slice_codes,
    slice_figure,
    wilson_interval,
)
from feedrank.cli import main
from rankers.calibration import observed_over_expected
from simulator.logs import LogFormatError
from tests.unit.log_files import LOG_FORMATS, write_log


def make_log(n_requests: int = 200, slate: int = 5, k: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """A log in the logged-traffic format whose clicks are Bernoulli(k · predicted)."""
    rng = np.random.default_rng(seed)
    n = n_requests * slate
    p = rng.uniform(0.02, 0.3, n)
    return pd.DataFrame(
        {
            "request_id": np.repeat([f"r{i}" for i in range(n_requests)], slate),
            "position": np.tile(np.arange(slate, dtype=np.int32), n_requests),
            "item_id": [f"i{i}" for i in rng.integers(0, 50, n)],
            "source": rng.choice(["jobs", "network", "courses"], n),
            "item_type": rng.choice(["job", "post"], n),
            "propensity": np.full(n, 0.2),
            "clicked": rng.random(n) < np.clip(k * p, 0, 1),
            "liked": rng.random(n) < 0.05,
            "predicted": p,
            "true_p": np.clip(k * p, 0, 1),
        }
    )


def test_overall_and_slices_are_ratios_of_sums():
    log = make_log(k=1.3)
    result = evaluate_oe(log, by=[["source"], ["source", "position"]])
    y, p = log["clicked"].to_numpy(float), log["predicted"].to_numpy()
    assert result.overall["o_over_e"] == pytest.approx(observed_over_expected(y, p))
    assert result.overall["o_over_e_true_p"] == pytest.approx(1.3)
    sums = log.groupby("source")[["clicked", "predicted"]].sum()
    table = result.by["source"].set_index(result.by["source"]["value"].map(lambda v: v[0]))
    assert table["observed"].to_dict() == pytest.approx(sums["clicked"].astype(float).to_dict())
    assert table["o_over_e"].to_dict() == pytest.approx((sums["clicked"] / sums["predicted"]).to_dict())
    joint = result.by["source,position"]
    assert len(joint) == log.groupby(["source", "position"]).ngroups
    assert joint["rows"].sum() == len(log)
    assert joint["value"].iloc[0] == ("courses", 0)  # sorted by value


def test_interval_is_the_clustered_delta_method():
    """ratio_stats' vectorised variance against the formula written out per slice with pandas."""
    log = make_log(k=0.8, seed=3)
    codes, values = slice_codes(log, ["source"])
    clusters = pd.factorize(log["request_id"])[0]
    table = ratio_stats(log["clicked"].to_numpy(float), log["predicted"].to_numpy(), codes, clusters, len(values))
    for i, (source,) in enumerate(values):
        part = log[log["source"] == source]
        per_request = part.groupby("request_id")[["clicked", "predicted"]].sum()
        o, e = per_request["clicked"].to_numpy(float), per_request["predicted"].to_numpy()
        r, n = o.sum() / e.sum(), len(o)
        se = np.sqrt(n / (n - 1) * np.sum((o - r * e) ** 2) / e.sum() ** 2)
        assert table.loc[i, "clusters"] == n
        assert table.loc[i, "ci_low"] == pytest.approx(r * np.exp(-1.959964 * se / r), rel=1e-6)
        assert table.loc[i, "ci_high"] == pytest.approx(r * np.exp(1.959964 * se / r), rel=1e-6)


def test_interval_covers_the_true_ratio_about_95_percent_of_the_time():
    """Clicks ~ Bernoulli(k · p · u) with u a per-request factor of mean 1 (rows of one request are
    correlated): the clustered interval must contain k in about 95% of 300 replications."""
    rng = np.random.default_rng(42)
    n_requests, slate, k, reps = 400, 10, 1.25, 300
    p = rng.beta(1.5, 15, n_requests * slate)
    cluster = np.repeat(np.arange(n_requests), slate)
    covered, clustered_width, naive_width = 0, 0.0, 0.0
    for _ in range(reps):
        u = rng.uniform(0.2, 1.8, n_requests)[cluster]
        y = (rng.random(len(p)) < np.clip(k * p * u, 0, 1)).astype(float)
        t = ratio_stats(y, p, clusters=cluster).iloc[0]
        covered += t["ci_low"] <= k <= t["ci_high"]
        clustered_width += t["ci_high"] - t["ci_low"]
        naive = ratio_stats(y, p).iloc[0]
        naive_width += naive["ci_high"] - naive["ci_low"]
    assert 0.90 <= covered / reps <= 0.99
    assert clustered_width > naive_width  # correlated rows: fewer effective observations


def test_slice_without_engagements_gets_the_poisson_upper_bound():
    t = ratio_stats(np.zeros(50), np.full(50, 0.02)).iloc[0]
    assert t["o_over_e"] == 0 and t["ci_low"] == 0
    assert t["ci_high"] == pytest.approx(3.689 / 1.0, rel=1e-3)


def test_reliability_table_bins_by_quantile_with_wilson_intervals():
    log = make_log(n_requests=400, k=1.0, seed=5)
    y, p = log["clicked"].to_numpy(float), log["predicted"].to_numpy()
    table = reliability_table(y, p, bins=10, truth=log["true_p"].to_numpy())
    assert len(table) == 10 and table["rows"].sum() == len(y)
    assert table["rows"].min() >= len(y) // 10 - 1
    assert (np.diff(table["mean_predicted"]) > 0).all()
    first = p <= table.loc[0, "high"]
    assert table.loc[0, "rows"] == first.sum()
    assert table.loc[0, "observed_rate"] == pytest.approx(y[first].mean())
    assert table["mean_true_p"].to_numpy() == pytest.approx(table["mean_predicted"].to_numpy())
    for row in table.itertuples():
        ci = binomtest(round(row.observed_rate * row.rows), row.rows).proportion_ci(method="wilson")
        assert (row.ci_low, row.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_reliability_table_with_tied_predictions_keeps_ties_together():
    p = np.array([0.1] * 90 + [0.5] * 10)
    y = np.r_[np.zeros(81), np.ones(9), np.ones(5), np.zeros(5)]
    table = reliability_table(y, p, bins=10)
    assert table["rows"].tolist() == [90, 10]
    assert table["observed_rate"].tolist() == pytest.approx([0.1, 0.5])


def test_wilson_interval_of_no_rows_is_undefined():
    low, high = wilson_interval(np.array([0.0, 3.0]), np.array([0.0, 10.0]))
    assert np.isnan(low[0]) and np.isnan(high[0]) and 0 < low[1] < 0.3 < high[1] < 1


def test_json_shape():
    out = evaluate_oe(make_log(), by=[["source"]], bins=4).to_json()
    json.dumps(out, allow_nan=False)
    assert set(out) == {"label", "predicted", "cluster", "rows", "overall", "by", "reliability"}
    assert out["cluster"] == "request_id"
    assert set(out["overall"]) == {"rows", "observed", "expected", "o_over_e", "ci95", "clusters", "o_over_e_true_p"}
    assert [s["value"] for s in out["by"]["source"]] == ["courses", "jobs", "network"]
    assert len(out["reliability"]) == 4 and {"mean_predicted", "observed_rate", "ci95"} <= set(out["reliability"][0])


def test_figures_draw():
    result = evaluate_oe(make_log(), by=[["source"]])
    assert reliability_figure(result.reliability, make_log()["predicted"].to_numpy()).axes
    assert slice_figure(result.by["source"], "source").axes


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("predicted", 1.5, "'predicted' must be a probability in [0, 1]; it is not in 2 row(s) (rows 3, 7)"),
        ("predicted", -0.1, "(rows 3, 7)"),
        ("liked", 2, "'liked' must be 0/1 or true/false; it is not in 2 row(s) (rows 3, 7)"),
    ],
)
def test_bad_values_are_errors_naming_the_rows(column, value, message):
    log = make_log()
    log[column] = log[column].astype(float)
    log.loc[[3, 7], column] = value
    with pytest.raises(LogFormatError) as err:
        evaluate_oe(log, label="liked")
    assert message in str(err.value)


# ---------------------------------------------------------------------------------------- the command


@pytest.fixture(params=LOG_FORMATS)
def log_file(request, tmp_path: Path) -> Path:
    return write_log(make_log(k=1.2), tmp_path, request.param)


def test_command_prints_json(log_file: Path, capsys):
    assert main(["eval", "oe", "--log", str(log_file), "--by", "source", "--by", "source,position", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = evaluate_oe(make_log(k=1.2), by=[["source"], ["source", "position"]]).to_json()
    ci95 = out["overall"].pop("ci95")
    assert ci95 == pytest.approx(expected["overall"].pop("ci95"))
    assert out["overall"] == pytest.approx(expected["overall"])
    assert out["overall"]["o_over_e_true_p"] == pytest.approx(1.2)
    assert [s["value"] for s in out["by"]["source,position"]][:2] == [["courses", 0], ["courses", 1]]
    assert len(out["reliability"]) == 10


def test_command_writes_a_report(log_file: Path, tmp_path: Path, capsys):
    report = tmp_path / "report"
    assert main(["eval", "oe", "--log", str(log_file), "--by", "item_type", "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "O/E by item_type" in printed and "Reliability" in printed
    text = (report / "report.md").read_text()
    assert "![Reliability diagram](reliability-diagram.png)" in text and "| job |" in text
    assert {p.name for p in report.glob("*.png")} == {"reliability-diagram.png", "o-e-by-item-type.png"}


def test_command_reads_only_the_columns_it_needs(tmp_path: Path, capsys):
    """A log from another system: no request_id, junk propensities; O/E needs neither."""
    log = make_log().drop(columns=["request_id", "true_p"]).assign(propensity=7.0)
    path = tmp_path / "other.csv"
    log.to_csv(path, index=False)
    assert main(["eval", "oe", "--log", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cluster"] is None and out["overall"]["clusters"] == len(log)
    assert "o_over_e_true_p" not in out["overall"]


@pytest.mark.parametrize(
    ("change", "args", "message"),
    [
        (lambda d: d.drop(columns=["predicted"]), [], "lacks column(s) ['predicted']"),
        (lambda d: d, ["--by", "country"], "lacks column(s) ['country']"),
        (
            lambda d: d.assign(predicted=d["predicted"].where(d.index != 4)),
            [],
            "'predicted' is empty in 1 row(s) (rows 4)",
        ),
        (lambda d: d.assign(predicted=d["predicted"].astype(object).where(d.index != 2, "high")), [], "(rows 2)"),
        (lambda d: d.assign(predicted=d["predicted"] * 5), [], "must be a probability in [0, 1]"),
        (lambda d: d, ["--label", "liked", "--cluster", "member_id"], "lacks column(s) ['member_id']"),
    ],
)
def test_command_errors_are_one_line_naming_column_and_rows(tmp_path: Path, capsys, change, args, message):
    path = tmp_path / "bad.csv"
    change(make_log()).to_csv(path, index=False)
    assert main(["eval", "oe", "--log", str(path), *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("feedrank eval oe: ") and message in captured.err
    assert captured.out == "" and "Traceback" not in captured.err


def test_command_keeps_nulls_of_a_slice_column_as_a_slice(tmp_path: Path, capsys):
    log = make_log()
    log["source"] = log["source"].where(log.index % 7 != 0)
    path = tmp_path / "nulls.parquet"
    log.to_parquet(path, index=False)
    assert main(["eval", "oe", "--log", str(path), "--by", "source", "--json"]) == 0
    slices = json.loads(capsys.readouterr().out)["by"]["source"]
    assert [s["value"] for s in slices] == ["courses", "jobs", "network", None]
    assert slices[-1]["rows"] == log["source"].isna().sum()


def test_command_on_a_missing_file(tmp_path: Path, capsys):
    assert main(["eval", "oe", "--log", str(tmp_path / "nope.parquet")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_command_slices_by_day_and_hour_of_the_timestamp(tmp_path: Path, capsys):
    """A model that drifts: calibrated on the first day, over-predicting by half on the second."""
    log = make_log(n_requests=400)
    day0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
    second = np.repeat(np.arange(400) >= 200, 5)
    log["timestamp"] = day0 + np.where(second, 86_400.0, 0.0) + np.tile(np.arange(5.0), 400) * 1800.0
    log["predicted"] = np.where(second, 1.5 * log["predicted"], log["predicted"])
    path = tmp_path / "drift.parquet"
    log.to_parquet(path, index=False)
    assert main(["eval", "oe", "--log", str(path), "--by", "day", "--by", "source,hour", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    days = out["by"]["day"]
    assert [s["value"] for s in days] == ["2026-01-01", "2026-01-02"]
    for s, rows in zip(days, (~second, second), strict=True):
        assert s["rows"] == rows.sum()
        assert s["o_over_e_true_p"] == pytest.approx(log["true_p"][rows].sum() / log["predicted"][rows].sum())
    assert days[0]["o_over_e_true_p"] == pytest.approx(1.0) and days[1]["o_over_e_true_p"] == pytest.approx(1 / 1.5)
    hours = {s["value"][1] for s in out["by"]["source,hour"]}
    assert hours == {f"2026-01-0{d} {h:02d}:00" for d in (1, 2) for h in (0, 1, 2)}


def test_command_by_day_prefers_a_day_column_and_names_bad_timestamps(tmp_path: Path, capsys):
    log = make_log().assign(day="monday", timestamp=1_767_225_600.0)
    path = tmp_path / "own.parquet"
    log.to_parquet(path, index=False)
    assert main(["eval", "oe", "--log", str(path), "--by", "day", "--json"]) == 0
    assert [s["value"] for s in json.loads(capsys.readouterr().out)["by"]["day"]] == ["monday"]
    bad = make_log().assign(timestamp=1_767_225_600.0)
    bad.loc[[3, 8], "timestamp"] = np.nan
    bad.to_csv(path := tmp_path / "bad.csv", index=False)
    assert main(["eval", "oe", "--log", str(path), "--by", "hour"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("feedrank eval oe: ") and "'timestamp'" in err and "rows 3, 8" in err
    make_log().to_csv(path, index=False)
    assert main(["eval", "oe", "--log", str(path), "--by", "day"]) == 2
    assert "timestamp" in capsys.readouterr().err
