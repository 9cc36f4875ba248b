"""The second-pass ranker: a logistic regression over the feature families and the FPR's score.

``design_matrix`` is the single place raw features become model inputs, so training and serving
cannot drift apart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from feedrank.contracts import ItemType

COUNT_FEATURES = [
    "member_activity__impressions",
    "member_activity__engagements",
    "item_popularity__impressions",
    "item_popularity__engagements",
    "member_actor__impressions",
    "member_actor__engagements",
    "member_type__impressions",
    "member_type__engagements",
]
RATE_FEATURES = ["member_activity__ctr", "item_popularity__ctr", "member_actor__ctr", "member_type__ctr"]
TYPE_FEATURES = [f"type_{t.value}" for t in ItemType]

# Model input columns grouped by the family they belong to (for explain and docs).
FAMILIES: dict[str, list[str]] = {
    "X_i": ["log_member_activity__impressions", "log_member_activity__engagements", "member_activity__ctr"],
    "X_t": [
        "log_item_popularity__impressions",
        "log_item_popularity__engagements",
        "item_popularity__ctr",
        "fpr_score",
        *TYPE_FEATURES,
    ],
    "X_ij": ["log_member_actor__impressions", "log_member_actor__engagements", "member_actor__ctr"],
    "X_ik": ["log_member_type__impressions", "log_member_type__engagements", "member_type__ctr"],
}
MODEL_COLUMNS: list[str] = [c for cols in FAMILIES.values() for c in cols]
PRIOR_CTR = 0.05


def _numeric(raw: pd.DataFrame, column: str, missing: float) -> pd.Series:
    if column not in raw:
        return pd.Series(missing, index=raw.index, dtype=float)
    return pd.to_numeric(raw[column], errors="coerce").fillna(missing).astype(float)


def design_matrix(raw: pd.DataFrame) -> pd.DataFrame:
    """Raw online/offline features (+ ``item_type``, ``fpr_score``) to the model's columns.

    Missing features (a new member, a new item) mean "no history": zero counts and the prior CTR.
    """
    out = pd.DataFrame(index=raw.index)
    for c in COUNT_FEATURES:
        out[f"log_{c}"] = np.log1p(_numeric(raw, c, 0.0).clip(lower=0.0))
    for c in RATE_FEATURES:
        out[c] = _numeric(raw, c, PRIOR_CTR)
    out["fpr_score"] = _numeric(raw, "fpr_score", 0.0)
    item_type = raw["item_type"].astype(str)
    for t in ItemType:
        out[f"type_{t.value}"] = (item_type == t.value).astype(float)
    return out[MODEL_COLUMNS]


class SecondPassRanker(ClassifierMixin, BaseEstimator):
    """P(engage | member, item) = sigmoid(beta . X_it), fitted on logged impressions."""

    def __init__(self, C: float = 1.0, max_iter: int = 1000, class_weight: str | None = None) -> None:
        self.C = C
        self.max_iter = max_iter
        self.class_weight = class_weight

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> SecondPassRanker:
        y = np.asarray(y).astype(int)
        if len(np.unique(y)) < 2:
            raise ValueError("training labels hold one class only; need both engaged and not-engaged rows")
        self.pipeline_ = Pipeline(
            [
                ("scale", StandardScaler()),
                ("lr", LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight=self.class_weight)),
            ]
        )
        self.pipeline_.fit(design_matrix(X), y)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.predict_proba(design_matrix(X))

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Each family's additive share of the logit, per row (to explain a score)."""
        check_is_fitted(self, "pipeline_")
        scaled = self.pipeline_.named_steps["scale"].transform(design_matrix(X))
        coef = self.pipeline_.named_steps["lr"].coef_[0]
        parts = pd.DataFrame(scaled * coef, columns=MODEL_COLUMNS, index=X.index)
        out = pd.DataFrame({fam: parts[cols].sum(axis=1) for fam, cols in FAMILIES.items()})
        out["intercept"] = self.pipeline_.named_steps["lr"].intercept_[0]
        return out
