"""`feedrank eval ranking`: AUC, NDCG@k, MAP@k, HR@k per request, cross-checked against scikit-learn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import ndcg_score, roc_auc_score

from evaluation.ranking_metrics import (
    average_precision_at_k,
    evaluate_ranking,
    group_auc,
    hit_at_k,
    metrics_figure,
    ndcg_at_k,
    rank_groups,
)
from feedrank.cli import main
from simulator.logs import LogFormatError
from tests.unit.log_files import LOG_FORMATS, write_log


def ragged(n_groups: int = 300, seed: int = 0, graded: bool = False, ties: bool = False) -> pd.DataFrame:
    """Groups of 1 to 14 rows, shuffled together (a group's rows need not be adjacent)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 15, n_groups)
    n = int(sizes.sum())
    score = rng.random(n)
    if ties:
        score = np.round(score, 1)
    label = (rng.random(n) < 0.25) * (rng.integers(1, 4, n) if graded else 1)
    frame = pd.DataFrame(
        {"request_id": np.repeat([f"r{g}" for g in range(n_groups)], sizes), "predicted": score, "clicked": label}
    )
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def per_group(frame: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
    """(labels, scores) per group in order of first appearance: the order rank_groups numbers them."""
    return [(g["clicked"].to_numpy(), g["predicted"].to_numpy()) for _, g in frame.groupby("request_id", sort=False)]


def ranked(frame: pd.DataFrame):
    return rank_groups(frame["request_id"], frame["predicted"].to_numpy(), frame["clicked"].to_numpy())


@pytest.mark.parametrize("k", [1, 3, 5, 20])
@pytest.mark.parametrize(("graded", "ties"), [(False, False), (True, False), (True, True)])
def test_ndcg_matches_sklearn(k, graded, ties):
    frame = ragged(seed=k, graded=graded, ties=ties)
    mine = ndcg_at_k(ranked(frame), k)
    checked = 0
    for value, (y, s) in zip(mine, per_group(frame), strict=True):
        if y.sum() == 0:
            assert np.isnan(value)  # no ideal ranking: excluded
        elif len(y) > 1:  # sklearn refuses groups of one
            assert value == pytest.approx(ndcg_score([y], [s], k=k), abs=1e-12)
            checked += 1
        else:
            assert value == 1.0
    assert checked > 100


def test_auc_pooled_and_per_group_match_sklearn():
    frame = ragged(seed=7, ties=True)
    result = evaluate_ranking(frame, ks=[5])
    assert result.metrics["auc"] == pytest.approx(roc_auc_score(frame["clicked"], frame["predicted"]))
    expected = [roc_auc_score(y, s) for y, s in per_group(frame) if 0 < y.sum() < len(y)]
    assert result.groups_with_both_classes == len(expected)
    assert result.metrics["gauc"] == pytest.approx(np.mean(expected))
    aucs = group_auc(ranked(frame))
    assert np.count_nonzero(~np.isnan(aucs)) == len(expected)


def reference_ap(y: np.ndarray, s: np.ndarray, k: int) -> float:
    """AP@k from its definition, one group at a time; ties: non-relevant rows first."""
    order = np.lexsort((y > 0, -s))
    rel = (y[order] > 0)[:k]
    precision_at = np.cumsum(rel) / np.arange(1, len(rel) + 1)
    return float(np.sum(precision_at * rel) / min(k, int((y > 0).sum())))


@pytest.mark.parametrize("k", [1, 2, 5, 30])
def test_map_and_hit_rate_match_their_definitions_on_random_groups(k):
    frame = ragged(seed=100 + k, ties=True)
    r = ranked(frame)
    aps, hits = average_precision_at_k(r, k), hit_at_k(r, k)
    for ap, hit, (y, s) in zip(aps, hits, per_group(frame), strict=True):
        if y.sum() == 0:
            assert np.isnan(ap) and np.isnan(hit)
            continue
        assert ap == pytest.approx(reference_ap(y, s, k))
        order = np.lexsort((y > 0, -s))
        assert hit == float((y[order][:k] > 0).any())


def small() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "request_id": ["a"] * 4 + ["b"] * 3 + ["c"] * 2,
            "predicted": [0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1, 0.5, 0.4],
            "clicked": [1, 0, 1, 0, 0, 0, 1, 0, 0],
        }
    )


def test_hand_computed_map_and_hit_rate():
    result = evaluate_ranking(small(), ks=[1, 2, 3, 10])
    # a: relevant at ranks 1 and 3. AP@3 = (1/1 + 2/3) / min(3, 2); AP@2 = (1/1) / 2; AP@1 = 1.
    # b: relevant at rank 3 only. AP@3 = (1/3) / 1; AP@2 = AP@1 = 0.  c: no relevant row, excluded.
    assert result.metrics["map@1"] == pytest.approx((1 + 0) / 2)
    assert result.metrics["map@2"] == pytest.approx((0.5 + 0) / 2)
    assert result.metrics["map@3"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 3) / 2)
    assert result.metrics["map@10"] == result.metrics["map@3"]  # k beyond every group
    assert result.metrics["hr@1"] == result.metrics["hr@2"] == pytest.approx(0.5)
    assert result.metrics["hr@3"] == result.metrics["hr@10"] == 1.0
    # b: DCG@3 = 1/log2(4) against an ideal 1/log2(2).
    assert result.metrics["ndcg@3"] == pytest.approx(((1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3)) + 0.5) / 2)
    assert result.groups == 3 and result.groups_with_positive == 2
    assert result.to_json()["groups_without_positive"] == 1


def test_ties_never_help_a_constant_score():
    frame = pd.DataFrame({"request_id": ["a", "a", "b", "b"], "predicted": 0.5, "clicked": [1, 0, 1, 0]})
    result = evaluate_ranking(frame, ks=[1])
    assert result.metrics["hr@1"] == 0.0 and result.metrics["map@1"] == 0.0  # pessimistic
    assert result.metrics["ndcg@1"] == pytest.approx(0.5)  # sklearn: the average over the tie
    assert result.metrics["auc"] == result.metrics["gauc"] == 0.5


def test_all_zero_groups_and_single_class_give_undefined_metrics():
    frame = pd.DataFrame({"request_id": ["a", "a", "b"], "predicted": [0.1, 0.2, 0.3], "clicked": [0, 0, 0]})
    out = evaluate_ranking(frame, ks=[5]).to_json()
    assert out["groups_without_positive"] == 2
    assert all(v is None for v in out["metrics"].values())
    json.dumps(out, allow_nan=False)


def test_figure_draws():
    assert metrics_figure(evaluate_ranking(small(), ks=[1, 3])).axes


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.assign(predicted=d["predicted"].where(d.index != 5)), "'predicted' is empty in 1 row(s) (rows 5)"),
        (lambda d: d.assign(predicted=d["predicted"].astype(object).where(d.index != 2, "x")), "(rows 2)"),
        (lambda d: d.assign(predicted=d["predicted"].where(d.index != 6, np.inf)), "not a finite number"),
        (lambda d: d.assign(clicked=d["clicked"].where(d.index != 1, -1)), "must not be negative"),
    ],
)
def test_bad_values_are_errors_naming_the_rows(change, message):
    with pytest.raises(LogFormatError) as err:
        evaluate_ranking(change(small()))
    assert message in str(err.value)


# ---------------------------------------------------------------------------------------- the command


@pytest.fixture(params=LOG_FORMATS)
def log_file(request, tmp_path: Path) -> Path:
    return write_log(ragged(seed=3).assign(position=0, item_id="i", propensity=1.0), tmp_path, request.param)


def test_command_prints_json(log_file: Path, capsys):
    assert main(["eval", "ranking", "--log", str(log_file), "--k", "3", "--k", "10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = evaluate_ranking(ragged(seed=3), ks=[3, 10]).to_json()
    assert out["metrics"] == pytest.approx(expected["metrics"])
    assert set(out["metrics"]) == {"auc", "gauc", "ndcg@3", "map@3", "hr@3", "ndcg@10", "map@10", "hr@10"}
    assert out["k"] == [3, 10] and out["groups"] == 300


def test_command_writes_a_report(log_file: Path, tmp_path: Path, capsys):
    report = tmp_path / "report"
    assert main(["eval", "ranking", "--log", str(log_file), "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "NDCG@k" in printed and "AUC" in printed
    text = (report / "report.md").read_text()
    assert "| k | NDCG@k | MAP@k | HR@k |" in text and ".png)" in text
    assert len(list(report.glob("*.png"))) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--score", "model_score"], "lacks column(s) ['model_score']"),
        (["--k", "0"], "--k must be at least 1"),
    ],
)
def test_command_errors(log_file: Path, capsys, args, message):
    assert main(["eval", "ranking", "--log", str(log_file), *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("feedrank eval ranking: ") and message in captured.err and captured.out == ""
