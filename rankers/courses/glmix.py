"""GLMix response prediction (Zhang et al., KDD 2016): a global logistic regression plus per-member and
per-course logistic coefficients (random effects), each L2-shrunk toward 0.

logit = x . beta  +  z_m . gamma[member]  +  z_c . alpha[course]

A member with few clicks keeps coefficients near 0 (the global model); one with many moves toward what
they click. Fitted by coordinate descent: each block is a ridge-logistic Newton solve with the other
blocks' logits as a fixed offset, and the per-entity solves are batched (one small Hessian per member
or course, solved together), which is why there is no Python loop over members.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from rankers.vectors import sigmoid

MAX_STEP = 5.0  # Newton steps are capped: a separable entity then converges instead of jumping
TOL = 1e-4  # step norm at which a block has converged (later coordinate-descent passes start warm)


def ridge_logistic(
    X: sp.csr_matrix, y: np.ndarray, offset: np.ndarray, l2: np.ndarray, coef: np.ndarray, steps: int
) -> np.ndarray:
    """Newton's method for one logistic regression with a per-coefficient L2 penalty (0: unpenalised).

    ``X`` is sparse: the one-hot crosses make most of it zeros, and X'WX is the cost of a step."""
    for _ in range(steps):
        p = sigmoid(offset + X @ coef)
        grad = X.T @ (y - p) - l2 * coef
        H = (X.T @ X.multiply((p * (1 - p))[:, None])).toarray() + np.diag(l2 + 1e-8)
        step = np.linalg.solve(H, grad)
        norm = np.linalg.norm(step)
        coef = coef + (step * (MAX_STEP / norm) if norm > MAX_STEP else step)
        if norm < TOL:
            break
    return coef


def batched_ridge_logistic(
    Z: np.ndarray, y: np.ndarray, offset: np.ndarray, group: np.ndarray, n_groups: int, l2: float, steps: int
) -> np.ndarray:
    """One ridge-logistic regression per group (``Z`` includes the intercept column), all at once."""
    n, q = Z.shape
    S = sp.csr_matrix((np.ones(n), (group, np.arange(n))), shape=(n_groups, n))
    coef = np.zeros((n_groups, q))
    eye = np.eye(q) * l2
    outer = (Z[:, :, None] * Z[:, None, :]).reshape(n, q * q)
    for _ in range(steps):
        p = sigmoid(offset + np.einsum("nq,nq->n", Z, coef[group]))
        grad = S @ (Z * (y - p)[:, None]) - l2 * coef
        H = (S @ (outer * (p * (1 - p))[:, None])).reshape(n_groups, q, q) + eye
        step = np.linalg.solve(H, grad[:, :, None])[:, :, 0]
        norm = np.linalg.norm(step, axis=1, keepdims=True)
        coef = coef + step * np.minimum(1.0, MAX_STEP / np.maximum(norm, 1e-12))
        if float(norm.max(initial=0.0)) < TOL:
            break
    return coef


class GLMix(ClassifierMixin, BaseEstimator):
    """Fixed + per-member + per-course logistic effects over a feature frame.

    ``X`` is a DataFrame with ``member`` and ``course`` id columns and numeric feature columns; the
    global model reads ``global_features`` (all numeric columns when None), the member effects read
    ``member_features`` and the course effects ``course_features`` (each with its own intercept).
    Unknown members and courses get zero effects: the global model alone.
    """

    def __init__(
        self,
        global_features: Sequence[str] | None = None,
        member_features: Sequence[str] = (),
        course_features: Sequence[str] = (),
        l2_global: float = 1.0,
        l2_member: float = 20.0,
        l2_course: float = 10.0,
        passes: int = 3,
        newton_steps: int = 8,
    ) -> None:
        self.global_features = global_features
        self.member_features = member_features
        self.course_features = course_features
        self.l2_global = l2_global
        self.l2_member = l2_member
        self.l2_course = l2_course
        self.passes = passes
        self.newton_steps = newton_steps

    # ----------------------------------------------------------------------------------------- fit
    def _blocks(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        g = X[self.global_columns_].to_numpy(dtype=np.float64)
        m = X[list(self.member_features)].to_numpy(dtype=np.float64)
        c = X[list(self.course_features)].to_numpy(dtype=np.float64)
        return g, m, c

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> GLMix:
        # many tiny solves: BLAS threads only add contention
        with threadpool_limits(limits=1):
            return self._fit(X, y)

    def _fit(self, X: pd.DataFrame, y: np.ndarray) -> GLMix:
        y = np.asarray(y, dtype=np.float64)
        self.classes_ = np.array([0, 1])
        ids = {"member", "course"}
        self.global_columns_ = list(self.global_features or [c for c in X.columns if c not in ids])
        missing = sorted((set(self.member_features) | set(self.course_features)) - set(self.global_columns_))
        if missing:
            raise ValueError(f"random-effect features must also be global features; not global: {missing}")
        G, M, C = self._blocks(X)
        m_codes, m_uniques = pd.factorize(X["member"].astype(str))
        c_codes, c_uniques = pd.factorize(X["course"].astype(str))
        self.member_index_ = {v: i for i, v in enumerate(m_uniques)}
        self.course_index_ = {v: i for i, v in enumerate(c_uniques)}
        Gi = sp.csr_matrix(np.column_stack([np.ones(len(y)), G]))
        Mi = np.column_stack([np.ones(len(y)), M])
        Ci = np.column_stack([np.ones(len(y)), C])
        l2g = np.full(Gi.shape[1], float(self.l2_global))
        l2g[0] = 0.0  # the intercept is not shrunk
        beta = np.zeros(Gi.shape[1])
        gamma = np.zeros((len(m_uniques), Mi.shape[1]))
        alpha = np.zeros((len(c_uniques), Ci.shape[1]))
        fixed = np.zeros(len(y))
        re_m = np.zeros(len(y))
        re_c = np.zeros(len(y))
        for _ in range(max(1, self.passes)):
            beta = ridge_logistic(Gi, y, re_m + re_c, l2g, beta, self.newton_steps)
            fixed = np.asarray(Gi @ beta)
            gamma = batched_ridge_logistic(
                Mi, y, fixed + re_c, m_codes, len(m_uniques), self.l2_member, self.newton_steps
            )
            re_m = np.einsum("nq,nq->n", Mi, gamma[m_codes])
            alpha = batched_ridge_logistic(
                Ci, y, fixed + re_m, c_codes, len(c_uniques), self.l2_course, self.newton_steps
            )
            re_c = np.einsum("nq,nq->n", Ci, alpha[c_codes])
        self.intercept_ = float(beta[0])
        self.coef_ = beta[1:]
        # a trailing zero row: what unknown ids (row -1) read
        self.member_coef_ = np.vstack([gamma, np.zeros(Mi.shape[1])])
        self.course_coef_ = np.vstack([alpha, np.zeros(Ci.shape[1])])
        self.member_feature_idx_ = np.array([self.global_columns_.index(c) for c in self.member_features], dtype=int)
        self.course_feature_idx_ = np.array([self.global_columns_.index(c) for c in self.course_features], dtype=int)
        return self

    # ------------------------------------------------------------------------------------- predict
    def member_row(self, member_id: str) -> int:
        return self.member_index_.get(member_id, -1)

    def course_rows(self, course_ids: Sequence[str]) -> np.ndarray:
        get = self.course_index_.get
        return np.fromiter((get(c, -1) for c in course_ids), dtype=np.int64, count=len(course_ids))

    def decision_arrays(self, G: np.ndarray, member_rows: np.ndarray | int, course_rows: np.ndarray) -> np.ndarray:
        """Logits from the global block ``G`` (columns ``global_columns_``); the serving path.

        Requires the member and course features to be among the global columns (they are in training).
        """
        M = G[:, self.member_feature_idx_]
        C = G[:, self.course_feature_idx_]
        gm = self.member_coef_[member_rows]
        gc = self.course_coef_[course_rows]
        fixed = self.intercept_ + G @ self.coef_
        if np.ndim(member_rows) == 0:
            re_m = gm[0] + M @ gm[1:]
        else:
            re_m = gm[:, 0] + np.einsum("nq,nq->n", M, gm[:, 1:])
        re_c = gc[:, 0] + np.einsum("nq,nq->n", C, gc[:, 1:])
        return fixed + re_m + re_c

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "coef_")
        G = X[self.global_columns_].to_numpy(dtype=np.float64)
        m = X["member"].astype(str).map(self.member_index_).fillna(-1).to_numpy(dtype=np.int64)
        c = X["course"].astype(str).map(self.course_index_).fillna(-1).to_numpy(dtype=np.int64)
        return self.decision_arrays(G, m, c)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = sigmoid(self.decision_function(X))
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(int)

    def member_coefficients(self, member_id: str) -> dict[str, float]:
        """A member's random effect by feature name (zeros for an unknown member): for explanations."""
        row = self.member_coef_[self.member_row(member_id)]
        return dict(zip(["intercept", *self.member_features], map(float, row), strict=True))
