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

from features.families import DERIVED_BY_FAMILY, PRIOR_CTR
from feedrank.contracts import ItemType

TYPE_FEATURES = [f"type_{t.value}" for t in ItemType]

# Model input columns grouped by the family they belong to (for explanations and docs). The stream
# features are ``features.families.derive``'s output, computed the same way for training and serving.
FAMILIES: dict[str, list[str]] = {fam: list(cols) for fam, cols in DERIVED_BY_FAMILY.items()}
FAMILIES["X_t"] = [*FAMILIES["X_t"], "fpr_score", *TYPE_FEATURES]
MODEL_COLUMNS: list[str] = [c for cols in FAMILIES.values() for c in cols]


def _numeric(raw: pd.DataFrame, column: str, missing: float) -> pd.Series:
    if column not in raw:
        return pd.Series(missing, index=raw.index, dtype=float)
    return pd.to_numeric(raw[column], errors="coerce").fillna(missing).astype(float)


def design_matrix(X: pd.DataFrame) -> pd.DataFrame:
    """Derived features (+ ``item_type``, ``fpr_score``) to the model's columns, in order.

    A missing derived feature means "no history": zero for counts and flags, the prior for rates.
    """
    out = pd.DataFrame(index=X.index)
    for c in MODEL_COLUMNS:
        if c in TYPE_FEATURES:
            out[c] = (X["item_type"].astype(str) == c.removeprefix("type_")).astype(float)
        else:
            out[c] = _numeric(X, c, PRIOR_CTR if "__ctr_" in c else 0.0)
    return out


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
