"""The click model behind the people scorer: a scikit-learn estimator over ``features.FEATURES``.

LightGBM by default (the graph features interact: common connections mean more for a member with few
connections), logistic regression as the simple, inspectable alternative. ``decision_function`` is the
raw log-odds the Platt calibrator maps to probabilities; it calls the fitted booster or the folded
linear weights directly, because sklearn's per-call validation costs more than the prediction at
serving's candidate-list sizes.
"""

from __future__ import annotations

import numpy as np
from lightgbm import LGBMClassifier
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from rankers.vectors import sigmoid

KINDS = ("lightgbm", "logistic")


class PeopleClickModel(ClassifierMixin, BaseEstimator):
    def __init__(
        self,
        kind: str = "lightgbm",
        n_estimators: int = 300,
        learning_rate: float = 0.03,
        num_leaves: int = 15,
        min_child_samples: int = 100,
        subsample: float = 0.8,
        colsample_bytree: float = 0.9,
        reg_lambda: float = 1.0,
        C: float = 1.0,
        random_state: int = 0,
    ) -> None:
        self.kind = kind
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.C = C
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> PeopleClickModel:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y).astype(int)
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = X.shape[1]
        if self.kind == "lightgbm":
            est = LGBMClassifier(
                n_estimators=self.n_estimators,
                learning_rate=self.learning_rate,
                num_leaves=self.num_leaves,
                min_child_samples=self.min_child_samples,
                subsample=self.subsample,
                subsample_freq=1 if self.subsample < 1.0 else 0,
                colsample_bytree=self.colsample_bytree,
                reg_lambda=self.reg_lambda,
                random_state=self.random_state,
                n_jobs=1,
                verbose=-1,
            ).fit(X, y)
            self.booster_ = est.booster_
        else:
            # Standardise, fit, then fold the scaling into the weights: serving is one dot product.
            mu, sd = X.mean(axis=0), X.std(axis=0)
            sd = np.where(sd > 0, sd, 1.0)
            lr = LogisticRegression(C=self.C, max_iter=1000).fit((X - mu) / sd, y)
            self.coef_ = lr.coef_[0] / sd
            self.intercept_ = float(lr.intercept_[0] - (lr.coef_[0] * mu / sd).sum())
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Raw log-odds of a click."""
        X = np.asarray(X, dtype=np.float64)
        if self.kind == "lightgbm":
            check_is_fitted(self, "booster_")
            return np.asarray(self.booster_.predict(X, raw_score=True), dtype=np.float64)
        check_is_fitted(self, "coef_")
        return X @ self.coef_ + self.intercept_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = sigmoid(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(int)
