"""Trains the network FPR's scorer from logged post impressions (label: clicked).

Features are computed point-in-time by replaying the member events through the serving featurizer.
Rows are split by time: the earliest part fits the trees; the next slice early-stops and fits the
Platt calibration; the latest slice is the test slice the reported metrics (AUC, log loss, O/E) come
from. The deployed model (by default) then refits the trees on the fit and calibration slices with the
chosen tree count and recalibrates on the test slice, so its calibrator too is fitted on scores of
rows its trees never saw, and on the most recent traffic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from feedrank.contracts import EventType
from rankers.calibration import held_out_metrics
from rankers.inventory import Inventory
from rankers.network.features import FEATURES, NetworkFeaturizer
from rankers.network.model import NetworkClickModel
from rankers.network.ranker import NetworkScorer
from rankers.network.settings import section
from rankers.training import LoggedTraffic, Progress, TrainedFpr, replay


class TrainingDataError(ValueError):
    """The logged traffic cannot train this FPR; the message says what is missing."""


def featurize(
    traffic: LoggedTraffic,
    rows: pd.DataFrame,
    featurizer: NetworkFeaturizer,
    chunk_seconds: float,
    progress: Progress | None = None,
) -> np.ndarray:
    """Point-in-time features of each row: the inventory as it stood before the row's chunk."""
    rows = rows.reset_index(drop=True)
    x = np.zeros((len(rows), len(FEATURES)))

    def on_chunk(inv: Inventory, chunk: pd.DataFrame) -> None:
        # rows of one request share the member and the moment: one transform per request
        for (member_id, t), req in chunk.groupby(["member_id", "timestamp"], sort=False):
            x[req.index.to_numpy()] = featurizer.transform(inv, str(member_id), req["item_id"].tolist(), float(t))

    replay(traffic.events, rows, on_chunk, chunk_seconds=chunk_seconds, progress=progress, until=-np.inf)
    return x


def _profiles(traffic: LoggedTraffic, until: float) -> Inventory:
    """Member profiles known at ``until``: all the featurizer fits on (never clicks)."""
    inv = Inventory()
    for e in traffic.events:
        if e.timestamp >= until:
            break
        if e.event_type == EventType.MEMBER_JOINED:
            inv.apply(e)
    return inv


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {
        **held_out_metrics(y, p),
        "ctr": float(np.mean(y)),
        "rows": float(len(y)),
    }


def train(traffic: LoggedTraffic, params: dict[str, Any], progress: Progress) -> TrainedFpr:
    """Fit, calibrate and test the click model on ``traffic.rows("post")``; returns the scorer."""
    cfg = section("training", params)
    model_cfg = section("model", params)
    rows = traffic.rows("post")
    if len(rows) < int(cfg["min_rows"]):
        raise TrainingDataError(f"only {len(rows)} logged post impressions; need at least {cfg['min_rows']}")
    y = rows["clicked"].to_numpy().astype(int)
    ts = rows["timestamp"].to_numpy(dtype=np.float64)

    # time split: fit | calibration (early stopping, Platt) | test (reported metrics)
    val = float(cfg["validation_fraction"])
    n = len(rows)
    cut_fit = round(n * (1.0 - val))
    cut_cal = cut_fit + (n - cut_fit) // 2
    # never split one timestamp (one request) across slices
    cut_fit = int(np.searchsorted(ts, ts[min(cut_fit, n - 1)], side="left"))
    cut_cal = int(np.searchsorted(ts, ts[min(cut_cal, n - 1)], side="left"))
    fit_idx, cal_idx, test_idx = np.arange(cut_fit), np.arange(cut_fit, cut_cal), np.arange(cut_cal, n)
    for name, idx in (("fit", fit_idx), ("calibration", cal_idx), ("test", test_idx)):
        if len(np.unique(y[idx])) < 2:
            raise TrainingDataError(f"the {name} slice ({len(idx)} rows) needs both clicked and unclicked rows")

    featurizer = NetworkFeaturizer.fit(_profiles(traffic, float(ts[cut_fit])))
    x = featurize(traffic, rows, featurizer, float(cfg["chunk_seconds"]), progress)

    task = progress.add_task("fitting network model", total=3 if cfg["refit"] else 2)
    model = NetworkClickModel(**model_cfg, early_stopping_rounds=int(cfg["early_stopping_rounds"]))
    model.fit(x[fit_idx], y[fit_idx], calibration_set=(x[cal_idx], y[cal_idx]))
    progress.update(task, advance=1)
    p_test = model.predict_click(x[test_idx])
    metrics = _metrics(y[test_idx], p_test)
    metrics["trees"] = float(model.n_trees_)
    metrics["train_rows"] = float(len(fit_idx))
    metrics["calibration_rows"] = float(len(cal_idx))
    progress.update(task, advance=1)
    if cfg["refit"]:
        # the deployed model: trees on every row but the latest slice, with the chosen tree count, and
        # the calibrator fitted on their scores of that latest slice (unseen by them, and the closest
        # to the traffic the model will serve)
        early = np.concatenate([fit_idx, cal_idx])
        model.refit(x[early], y[early])
        model.calibrate(x[test_idx], y[test_idx])
        progress.update(task, advance=1)
    scorer = NetworkScorer(featurizer, model, metrics=metrics)
    return TrainedFpr(scorer, metrics, {"model": model_cfg, "training": cfg, "features": list(FEATURES)})
