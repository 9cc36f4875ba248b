"""Platt scaling: raw model scores to calibrated click probabilities.

Monotone and strictly increasing, so calibration never reorders a ranking (isotonic regression would
create ties inside the top-k). Fitted on held-out logged traffic, never on the rows the model saw.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.utils.validation import check_is_fitted

from rankers.vectors import observed_over_expected

__all__ = ["PlattCalibrator", "calibration_report", "held_out_metrics", "observed_over_expected"]


class PlattCalibrator(BaseEstimator):
    """``sigmoid(a * raw + b [+ offset])``: ``a`` and ``b`` fitted by L2-penalised logistic regression (as
    sklearn's ``LogisticRegression(C)`` on one feature, with ``a`` penalised and ``b`` not).

    ``offset`` is a part of the log-odds the scaling must leave as it is: the second-pass ranker's
    position terms, fitted on all rows, which a per-source slope would otherwise stretch (with slopes
    of 1.04-1.13, network posts' held-out O/E ran from 0.91 in the top slots to 1.05 in the bottom ones;
    with the position terms as an offset, 0.93-0.98)."""

    def __init__(self, C: float = 1e4) -> None:
        self.C = C

    def fit(self, raw: np.ndarray, y: np.ndarray, offset: np.ndarray | None = None) -> PlattCalibrator:
        y = np.asarray(y, dtype=np.float64)
        if len(np.unique(y)) < 2:
            raise ValueError("calibration needs both clicked and not-clicked rows")
        x = np.asarray(raw, dtype=np.float64)
        off = np.zeros_like(x) if offset is None else np.asarray(offset, dtype=np.float64)
        n, ridge = len(x), 1.0 / self.C

        def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:  # mean log loss + penalty, and gradient
            s = ab[0] * x + ab[1] + off
            r = expit(s) - y
            value = np.mean(np.logaddexp(0.0, s) - y * s) + 0.5 * ridge * ab[0] ** 2 / n
            return float(value), np.array([np.mean(r * x) + ridge * ab[0] / n, np.mean(r)])

        def hessian(ab: np.ndarray) -> np.ndarray:
            w = expit(ab[0] * x + ab[1] + off)
            w = w * (1.0 - w)
            xx, x1 = np.mean(w * x * x) + ridge / n, np.mean(w * x)
            return np.array([[xx, x1], [x1, np.mean(w)]])

        fit = minimize(loss, np.array([1.0, 0.0]), jac=True, hess=hessian, method="trust-exact")
        self.coef_, self.intercept_ = float(fit.x[0]), float(fit.x[1])
        return self

    def __setstate__(self, state: dict[str, Any]) -> None:
        lr = state.pop("lr_", None)  # saved before the offset: sklearn's fitted model
        if lr is not None:
            state.update(coef_=float(lr.coef_[0, 0]), intercept_=float(lr.intercept_[0]))
        super().__setstate__(state)

    def decision_function(self, raw: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        """The calibrated log-odds, computed without sklearn's per-call checks (serving is hot)."""
        check_is_fitted(self, "coef_")
        out = self.coef_ * np.asarray(raw, dtype=np.float64) + self.intercept_
        return out if offset is None else out + np.asarray(offset, dtype=np.float64)

    def predict(self, raw: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        """Calibrated probabilities."""
        return expit(self.decision_function(raw, offset))


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
