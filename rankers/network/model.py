"""The click model: LightGBM trees for the ranking, Platt scaling for calibrated probabilities.

A scikit-learn estimator (parameters in ``__init__``, nothing done there, ``fit``/``predict_proba``),
so it clones, grid-searches and pickles like any other. Calibration is a separate step on a slice of
traffic the trees never saw (``calibrate``), because the mixer compares FPRs by their probabilities:
an over-confident network FPR would crowd out every other inventory.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from rankers.calibration import PlattCalibrator


class NetworkClickModel(ClassifierMixin, BaseEstimator):
    """``LGBMClassifier`` (binary) whose ``predict_proba`` goes through a fitted ``PlattCalibrator``.

    Before ``calibrate`` the probabilities are LightGBM's own (already log-loss fitted, but on the
    training rows); ``fit`` with ``calibration_set`` early-stops and calibrates on that held-out slice.
    """

    def __init__(
        self,
        n_estimators: int = 600,
        learning_rate: float = 0.03,
        num_leaves: int = 7,
        min_child_samples: int = 40,
        subsample: float = 0.8,
        subsample_freq: int = 1,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        early_stopping_rounds: int | None = 60,
        random_state: int = 0,
        n_jobs: int = 1,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.subsample_freq = subsample_freq
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _lgbm(self, n_estimators: int) -> lgb.LGBMClassifier:
        return lgb.LGBMClassifier(
            objective="binary",
            n_estimators=n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            subsample=self.subsample,
            subsample_freq=self.subsample_freq,
            colsample_bytree=self.colsample_bytree,
            reg_lambda=self.reg_lambda,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
            verbose=-1,
        )

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        calibration_set: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> NetworkClickModel:
        """Fit the trees on (X, y); with a later ``calibration_set``, early-stop and calibrate on it."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y).astype(int)
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = X.shape[1]
        model = self._lgbm(self.n_estimators)
        fit_kw: dict[str, Any] = {}
        if calibration_set is not None and self.early_stopping_rounds:
            Xc, yc = calibration_set
            fit_kw = {
                "eval_X": (np.asarray(Xc, dtype=np.float64),),
                "eval_y": (np.asarray(yc).astype(int),),
                "callbacks": [lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
            }
        model.fit(X, y, **fit_kw)
        self.lgbm_ = model
        self.booster_ = model.booster_
        best = getattr(model, "best_iteration_", None)
        self.n_trees_ = int(best) if best else int(model.booster_.num_trees())
        self.calibrator_: PlattCalibrator | None = None
        if calibration_set is not None:
            self.calibrate(*calibration_set)
        return self

    def refit(self, X: np.ndarray, y: np.ndarray) -> NetworkClickModel:
        """The chosen tree count on (more) rows. Drops the calibrator: calibrate again on rows these
        trees have not seen (a calibrator fitted on other trees' scores would double-count any drift)."""
        check_is_fitted(self, "booster_")
        model = self._lgbm(self.n_trees_)
        model.fit(np.asarray(X, dtype=np.float64), np.asarray(y).astype(int))
        self.lgbm_ = model
        self.booster_ = model.booster_
        self.calibrator_ = None
        return self

    def calibrate(self, X: np.ndarray, y: np.ndarray) -> NetworkClickModel:
        self.calibrator_ = PlattCalibrator().fit(self.decision_function(X), y)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """The raw margin (log-odds before calibration), straight from the booster: serving is hot."""
        check_is_fitted(self, "booster_")
        return self.booster_.predict(
            np.asarray(X, dtype=np.float64), raw_score=True, num_iteration=self.n_trees_, num_threads=self.n_jobs
        )

    def predict_click(self, X: np.ndarray) -> np.ndarray:
        """Calibrated P(click), one per row."""
        raw = self.decision_function(X)
        if self.calibrator_ is not None:
            return self.calibrator_.predict(raw)
        return 1.0 / (1.0 + np.exp(-raw))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = self.predict_click(X)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.predict_click(X) >= 0.5).astype(int)
