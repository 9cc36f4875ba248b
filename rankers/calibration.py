"""Platt scaling: raw model scores to calibrated click probabilities.

Monotone and strictly increasing, so calibration never reorders a ranking (isotonic regression would
create ties inside the top-k). Fitted on held-out logged traffic, never on the rows the model saw.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.utils.validation import check_is_fitted

from rankers.vectors import observed_over_expected

__all__ = ["PlattCalibrator", "calibration_report", "held_out_metrics", "observed_over_expected"]


class PlattCalibrator(BaseEstimator):
    def __init__(self, C: float = 1e4) -> None:
        self.C = C

    def fit(self, raw: np.ndarray, y: np.ndarray) -> PlattCalibrator:
        y = np.asarray(y).astype(int)
        if len(np.unique(y)) < 2:
            raise ValueError("calibration needs both clicked and not-clicked rows")
        self.lr_ = LogisticRegression(C=self.C).fit(np.asarray(raw, dtype=np.float64).reshape(-1, 1), y)
        return self

    def decision_function(self, raw: np.ndarray) -> np.ndarray:
        """The calibrated log-odds, computed without sklearn's per-call checks (serving is hot)."""
        check_is_fitted(self, "lr_")
        a, b = float(self.lr_.coef_[0, 0]), float(self.lr_.intercept_[0])
        return a * np.asarray(raw, dtype=np.float64) + b

    def predict(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities."""
        return 1.0 / (1.0 + np.exp(-self.decision_function(raw)))


def held_out_metrics(y: np.ndarray, p: np.ndarray, rank_score: np.ndarray | None = None) -> dict[str, float]:
    """What every trainer reports on rows it did not fit: AUC (of ``rank_score`` if given, else of ``p``;
    NaN with one class), log loss and O/E of the probabilities ``p`` (NaN without rows)."""
    y = np.asarray(y).astype(int)
    nan = float("nan")
    return {
        "auc": float(roc_auc_score(y, p if rank_score is None else rank_score)) if len(np.unique(y)) == 2 else nan,
        "log_loss": float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1])) if len(y) else nan,
        "o_over_e": observed_over_expected(y, p) if len(y) else nan,
    }


def calibration_report(test: pd.DataFrame, p: np.ndarray) -> dict[str, Any]:
    """Held-out AUC, log loss and O/E overall and per source. Where the rows carry the ground truth's
    click probability (``true_p``, simulated traffic), also O/E against it: the same ratio without
    the sampling noise of the clicks."""
    y = test["label"].to_numpy()
    truth = test["true_p"].to_numpy() if "true_p" in test and test["true_p"].notna().all() else None
    report: dict[str, Any] = {"rows_test": float(len(test)), **held_out_metrics(y, p)}
    if truth is not None:
        report["o_over_e_true_p"] = observed_over_expected(truth, p)
    by_source: dict[str, dict[str, float]] = {}
    for src, idx in test.groupby("source").indices.items():
        entry = {
            "rows": float(len(idx)),
            "engaged": float(y[idx].sum()),
            "o_over_e": observed_over_expected(y[idx], p[idx]),
        }
        if truth is not None:
            entry["o_over_e_true_p"] = observed_over_expected(truth[idx], p[idx])
        by_source[str(src)] = entry
    report["by_source"] = by_source
    return report
