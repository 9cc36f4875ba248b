"""The jobs model for ``feedrank fpr evaluate jobs`` on any interaction file (member, item, time only).

No texts or profiles there, so it keeps the collaborative half of the FPR: item-kNN over co-engaged
items, Prod2Vec (skip-gram on each member's time-ordered items) and popularity, blended on one [0, 1]
scale. Members with no training history get popularity alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rankers.jobs.embeddings import train_prod2vec
from rankers.jobs.settings import settings


def _max_scaled(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=-1, keepdims=True) if x.size else np.ones((*x.shape[:-1], 1))
    return x / np.where(top > 0, top, 1.0)


class JobsInteractionModel:
    """Blend of item-kNN, Prod2Vec similarity to the member's history, and popularity.

    ``None`` params take their value from ``config.toml`` (``offline_*`` and ``p2v_*`` keys).
    """

    def __init__(
        self,
        knn_weight: float | None = None,
        prod2vec_weight: float | None = None,
        popularity_weight: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.knn_weight = knn_weight
        self.prod2vec_weight = prod2vec_weight
        self.popularity_weight = popularity_weight
        self.params = params

    def fit(self, interactions: pd.DataFrame, n_members: int, n_items: int) -> JobsInteractionModel:
        s = settings(self.params)
        self.w_ = (
            float(s["offline_knn_weight"] if self.knn_weight is None else self.knn_weight),
            float(s["offline_prod2vec_weight"] if self.prod2vec_weight is None else self.prod2vec_weight),
            float(s["offline_popularity_weight"] if self.popularity_weight is None else self.popularity_weight),
        )
        pos = interactions[interactions["label"] > 0] if "label" in interactions else interactions
        pos = pos.sort_values(["member", "timestamp"], kind="stable")
        m, i = pos["member"].to_numpy(), pos["item"].to_numpy()
        self.n_items_ = n_items
        self.popularity_ = _max_scaled(np.bincount(i, minlength=n_items).astype(np.float64))
        R = sp.csr_matrix((np.ones(len(pos)), (m, i)), shape=(n_members, n_items))
        R.data[:] = 1.0  # a repeat is not more evidence of a match than one engagement
        self.R_ = R
        # cosine item-item co-occurrence, self-similarity removed
        C = (R.T @ R).tocsr()
        C.setdiag(0.0)
        C.eliminate_zeros()
        deg = np.sqrt(np.asarray(R.sum(axis=0)).ravel())
        inv = sp.diags(1.0 / np.maximum(deg, 1.0))
        self.S_ = (inv @ C @ inv).tocsr()
        seqs = [list(map(str, g)) for g in np.split(i, np.flatnonzero(np.diff(m)) + 1)] if len(i) else []
        table = train_prod2vec(
            seqs,
            dim=int(s["p2v_dim"]),
            window=int(s["p2v_window"]),
            epochs=int(s["p2v_epochs"]),
            negative=int(s["p2v_negative"]),
            min_count=1,
            seed=int(s["seed"]),
        )
        V = np.zeros((n_items, table.dim), dtype=np.float32)
        if len(table):
            V[[int(k) for k in table.index]] = table.matrix
        self.V_ = V
        return self

    def score(self, members: np.ndarray) -> np.ndarray:
        w_knn, w_p2v, w_pop = self.w_
        hist = self.R_[members]
        has = (np.asarray(hist.sum(axis=1)).ravel() > 0)[:, None]
        knn = _max_scaled((hist @ self.S_).toarray())
        H = np.asarray(hist @ self.V_)
        norm = np.linalg.norm(H, axis=1, keepdims=True)
        p2v = (H / np.maximum(norm, 1e-9)) @ self.V_.T
        p2v = np.where(norm > 0, (p2v + 1.0) / 2.0, 0.0)  # cosine to [0, 1]
        return w_pop * self.popularity_[None, :] + has * (w_knn * knn + w_p2v * p2v)
