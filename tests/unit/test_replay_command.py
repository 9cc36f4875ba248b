"""`feedrank eval replay` end to end: simulated logs and policy tables in Parquet and CSV, the JSON and
table it prints, the report it writes, dispatch to ranker configurations, and errors that name the rows."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.replay_command import is_ranker_spec
from feedrank.cli import main
from simulator.config import SessionConfig, WorldConfig
from simulator.run import simulate_to_files
from tests.unit.log_files import LOG_FORMATS, write_log

POLICY = ["request_id", "position", "item_id", "probability"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> dict[str, Path]:
    """One uniform log in both formats, and a policy that keeps the logged item at even positions and shows
    an item never logged at odd ones, so replay, matched and IPS are known exactly from the log. (Made from
    the log, it is not a policy the estimators are unbiased for; the ground truth is test_off_policy's.)"""
    root = tmp_path_factory.mktemp("replay")
    world = WorldConfig.build("world", n_members=300, seed=1)
    sessions = SessionConfig.build("sessions", n_requests=1_500, seed=2)
    for fmt in ("parquet", "csv"):
        simulate_to_files(world, sessions, root / fmt, fmt=fmt, show_progress=False, with_world=False)
    log = pd.read_parquet(root / "parquet" / "impressions.parquet")
    even = log["position"] % 2 == 0
    policy = log[POLICY[:3]].assign(
        item_id=np.where(even, log["item_id"], "never-logged"), probability=1.0, rhat=log["true_p"]
    )
    policy.to_parquet(root / "policy.parquet", index=False)
    policy.to_csv(root / "policy.csv", index=False)
    return {
        "root": root,
        "log": root / "parquet" / "impressions.parquet",
        "csv_log": root / "csv" / "impressions.csv",
        "policy": root / "policy.parquet",
        "csv_policy": root / "policy.csv",
    }


def replay(*args: object) -> int:
    return main(["eval", "replay", *map(str, args)])


def run_json(capsys, *args: object) -> dict:
    assert replay(*args, "--json") == 0
    return json.loads(capsys.readouterr().out)


def flat(doc: dict, prefix: str = "") -> dict:
    """Nested JSON as {"ips.value": v, "ips.ci95.0": lo, ...}, for pytest.approx."""
    out = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        elif isinstance(value, list) and all(isinstance(v, float | int) for v in value):
            out.update({f"{prefix}{key}.{i}": v for i, v in enumerate(value)})
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_json_has_every_estimate_with_the_exact_values(sim, capsys):
    doc = run_json(capsys, "--log", sim["log"], "--policy", sim["policy"], "--bootstrap", 100)
    log = pd.read_parquet(sim["log"])
    even = (log["position"] % 2 == 0).to_numpy()
    clicked = log["clicked"].to_numpy(dtype=float)
    assert list(doc)[:4] == ["replay", "ips", "snips", "logged"]
    assert doc["replay"]["matched"] == even.sum()
    assert doc["replay"]["value"] == pytest.approx(clicked[even].mean())
    assert doc["ips"]["value"] == pytest.approx(np.mean(clicked * even / log["propensity"]))
    assert doc["logged"]["value"] == pytest.approx(clicked.mean())
    for name in ("replay", "ips", "snips", "logged"):
        lo, hi = doc[name]["ci95"]
        assert lo <= doc[name]["value"] <= hi
    assert doc["rows"] == len(log) and doc["requests"] == log["request_id"].nunique() and doc["bootstrap"] == 100
    assert "dr" not in doc


def test_csv_log_and_policy_give_the_same_answer(sim, capsys):
    parquet = run_json(capsys, "--log", sim["log"], "--policy", sim["policy"], "--seed", 3)
    csv = run_json(capsys, "--log", sim["csv_log"], "--policy", sim["csv_policy"], "--seed", 3)
    mixed = run_json(capsys, "--log", sim["csv_log"], "--policy", sim["policy"], "--seed", 3)
    assert flat(csv) == pytest.approx(flat(parquet)) and flat(mixed) == pytest.approx(flat(parquet))


def test_doubly_robust_with_a_reward_column(sim, capsys):
    log = pd.read_parquet(sim["log"]).assign(rhat=lambda f: f["true_p"])
    log.to_parquet(sim["root"] / "log_rhat.parquet")
    doc = run_json(capsys, "--log", sim["root"] / "log_rhat.parquet", "--policy", sim["policy"], "--reward", "rhat")
    lo, hi = doc["dr"]["ci95"]
    assert lo <= doc["dr"]["value"] <= hi
    assert list(doc)[:5] == ["replay", "ips", "snips", "dr", "logged"]


def test_table_output(sim, capsys):
    assert replay("--log", sim["log"], "--policy", sim["policy"], "--bootstrap", 20) == 0
    out = capsys.readouterr().out
    for word in ("replay", "IPS", "SNIPS", "logged", "matched rows", "effective sample size"):
        assert word in out


def test_report_is_written_and_json_stays_clean(sim, capsys, tmp_path):
    doc = run_json(capsys, "--log", sim["log"], "--policy", sim["policy"], "--report", tmp_path / "report")
    assert doc["replay"]["matched"] > 0
    md = (tmp_path / "report" / "report.md").read_text()
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert pngs == ["click-rate-by-position.png", "estimates-against-the-logged-value.png", "importance-weights.png"]
    for png in pngs:
        assert f"({png})" in md and (tmp_path / "report" / png).stat().st_size > 1_000
    assert "Effective sample size" in md and "| replay |" in md


def test_policy_rows_for_other_requests_are_counted(sim, capsys, tmp_path):
    policy = pd.read_parquet(sim["policy"])
    extra = pd.DataFrame({"request_id": ["elsewhere"], "position": [0], "item_id": ["x"], "probability": [1.0]})
    pd.concat([policy, extra]).to_parquet(tmp_path / "p.parquet")
    doc = run_json(capsys, "--log", sim["log"], "--policy", tmp_path / "p.parquet", "--bootstrap", 0)
    assert doc["policy_rows_ignored"] == 1 and any("absent from the log" in n for n in doc["notes"])
    assert doc["ips"]["ci95"] == [None, None]


# ---------------------------------------------------------------------------------------------- errors
def expect_error(capsys, *args: object) -> str:
    assert replay(*args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.startswith("feedrank eval replay: ")
    return captured.err


@pytest.mark.parametrize("fmt", LOG_FORMATS)
def test_log_missing_a_column(sim, capsys, tmp_path, fmt):
    path = write_log(pd.read_parquet(sim["log"]).drop(columns=["propensity"]), tmp_path, fmt, stem="log")
    err = expect_error(capsys, "--log", path, "--policy", sim["policy"])
    assert "lacks column(s) ['propensity']" in err


def test_log_propensity_outside_unit_interval_names_rows(sim, capsys, tmp_path):
    log = pd.read_parquet(sim["log"])
    log.loc[[3, 5], "propensity"] = [0.0, 1.5]
    log.to_parquet(tmp_path / "log.parquet")
    err = expect_error(capsys, "--log", tmp_path / "log.parquet", "--policy", sim["policy"])
    assert "propensity outside (0, 1] in 2 row(s) (rows 3, 5)" in err


def test_log_slot_logged_twice_names_it(sim, capsys, tmp_path):
    log = pd.read_parquet(sim["log"])
    log.loc[1, "position"] = log.loc[0, "position"]
    log.to_parquet(tmp_path / "log.parquet")
    err = expect_error(capsys, "--log", tmp_path / "log.parquet", "--policy", sim["policy"])
    assert f"logged more than once in 2 row(s) (rows 0, 1): 1 slot(s) ({log.loc[0, 'request_id']} position" in err


def test_policy_summing_above_one_names_the_slot(sim, capsys, tmp_path):
    policy = pd.read_parquet(sim["policy"])
    first = policy.iloc[[0]].assign(item_id="another", probability=0.5)
    pd.concat([policy, first]).to_csv(tmp_path / "p.csv", index=False)
    err = expect_error(capsys, "--log", sim["log"], "--policy", tmp_path / "p.csv")
    assert f"add up to more than 1 in 1 slot(s) ({policy.loc[0, 'request_id']} position 0); sums 1.5" in err


def test_policy_probability_out_of_range_names_rows(sim, capsys, tmp_path):
    policy = pd.read_parquet(sim["policy"])
    policy.loc[7, "probability"] = 2.0
    policy.to_parquet(tmp_path / "p.parquet")
    err = expect_error(capsys, "--log", sim["log"], "--policy", tmp_path / "p.parquet")
    assert "probability is not a number in [0, 1] in 1 row(s) (rows 7)" in err


def test_reward_column_missing_from_the_log(sim, capsys):
    err = expect_error(capsys, "--log", sim["log"], "--policy", sim["policy"], "--reward", "rhat")
    assert "lacks column(s) ['rhat']" in err


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("missing.csv", "neither an existing table file nor a ranker configuration"),
        ("Not A Spec", "neither an existing table file nor a ranker configuration"),
    ],
)
def test_unknown_policy(sim, capsys, policy, message):
    assert message in expect_error(capsys, "--log", sim["log"], "--policy", policy)


def test_missing_log(sim, capsys, tmp_path):
    assert "does not exist" in expect_error(capsys, "--log", tmp_path / "none.parquet", "--policy", sim["policy"])


def test_negative_bootstrap_is_a_usage_error(sim, capsys):
    with pytest.raises(SystemExit) as exit_:
        replay("--log", sim["log"], "--policy", sim["policy"], "--bootstrap", -1)
    assert exit_.value.code == 2


# ---------------------------------------------------------------------------------------------- ranker policies
@pytest.mark.parametrize(
    ("spec", "expected"),
    [("spr", True), ("spr/20260101-120000", True), ("my_ranker-2", True), ("policy.csv", False),
     ("tables/p.parquet", False), ("Spr", False), ("spr/", False), ("/abs/path", False)],
)  # fmt: skip
def test_is_ranker_spec(spec, expected):
    assert is_ranker_spec(spec) is expected


class FakeRankerError(ValueError):
    pass


@pytest.fixture
def fake_ranker(monkeypatch, sim):
    """A stand-in ``evaluation.ranker_policy`` that records its calls and answers the logged slates."""
    calls: list[tuple[str, Path, list[str]]] = []

    def ranker_policy_table(log: pd.DataFrame, spec: str, data: Path) -> pd.DataFrame:
        calls.append((spec, data, list(log.columns)))
        if spec == "spr/broken":
            raise FakeRankerError("SPR version 'broken' does not exist; available: v1")
        table = log[POLICY[:3]].assign(probability=1.0)
        table.attrs["coverage"] = 1.0
        table.attrs["exact_coverage"] = 1.0
        return table

    module = types.ModuleType("evaluation.ranker_policy")
    module.ranker_policy_table = ranker_policy_table
    module.RankerPolicyError = FakeRankerError
    monkeypatch.setitem(sys.modules, "evaluation.ranker_policy", module)
    return calls


def test_ranker_spec_runs_the_ranker_over_the_log(sim, capsys, fake_ranker):
    doc = run_json(capsys, "--log", sim["log"], "--policy", "spr/v1", "--bootstrap", 20)
    spec, data, columns = fake_ranker[0]
    assert spec == "spr/v1" and data == sim["log"].parent
    assert {"member_id", "timestamp"} <= set(columns)  # the whole log: the ranker reruns the requests
    assert doc["replay"]["value"] == pytest.approx(doc["logged"]["value"])  # it shows what was logged
    assert doc["replay"]["matched"] == doc["rows"]
    assert any("100.0%" in n for n in doc["notes"])
    run_json(capsys, "--log", sim["log"], "--policy", "spr", "--data", sim["root"], "--bootstrap", 0)
    assert fake_ranker[1][:2] == ("spr", sim["root"])


def test_ranker_errors_are_reported(sim, capsys, fake_ranker):
    err = expect_error(capsys, "--log", sim["log"], "--policy", "spr/broken")
    assert "SPR version 'broken' does not exist" in err


def test_real_ranker_module_rejects_an_unknown_ranker(sim, capsys):
    pytest.importorskip("evaluation.ranker_policy")
    err = expect_error(capsys, "--log", sim["log"], "--policy", "lightgbm/v1")
    assert "lightgbm/v1" in err
