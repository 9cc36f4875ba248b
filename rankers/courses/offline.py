"""The courses model on any interaction file (``feedrank fpr evaluate courses``): only member, item,
timestamp and maybe a label are known, so every signal is derived from the ids.

* NeuMF on the ids with sampled negatives (rows with label 0 are kept as explicit negatives); members
  and items absent from training score through the unknown-id embedding;
* the item's popularity, log1p(positive rows), the baseline's own ordering;
* item-item co-occurrence: how similar the item is to the member's engaged items, by who engaged both.

On sparse course clicks (one or two per member) NeuMF alone relearns popularity, while co-occurrence
carries the members' topical clusters. The blend weights are chosen the way the model is judged: each
member's last training positive is held out, the signals are fitted on the rest, and the weights with
the best NDCG@k on those held-out items win (a logistic blend, tried first, optimised the wrong thing:
it let popularity dominate and lost to it). The signals are then refitted on every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rankers.courses.ncf import NeuMFClassifier
from rankers.courses.settings import load_settings

BATCH = 512  # members per scoring block: (BATCH x items) grids bound the memory


class Signals:
    """NeuMF, popularity and co-occurrence fitted on one set of interactions, as (members x items) grids."""

    def __init__(self, ncf: NeuMFClassifier, history: int = 50, shrink: float = 5.0) -> None:
        self.ncf = ncf
        self.history = history
        self.shrink = shrink

    def fit(self, df: pd.DataFrame, n_members: int, n_items: int) -> Signals:
        y = df["label"].to_numpy() if "label" in df else np.ones(len(df), dtype=int)
        self.ncf.fit(df[["member", "item"]].to_numpy(), y)
        self.item_rows = self.ncf.course_rows(np.arange(n_items))
        pos = df[y > 0]
        # the last ``history`` positives per member: long histories would make R'R dense
        pos = pos.sort_values("timestamp", kind="stable").groupby("member", sort=False).tail(self.history)
        R = sp.csr_matrix((np.ones(len(pos)), (pos["member"], pos["item"])), shape=(n_members, n_items))
        R.data[:] = 1.0
        counts = np.asarray(R.sum(axis=0)).ravel()
        # popularity counts every positive row (a repeated engagement too), as the baseline does
        self.log_pop = np.log1p(np.bincount(df.loc[y > 0, "item"].to_numpy(), minlength=n_items).astype(np.float64))
        C = (R.T @ R).tocoo()
        keep = C.row != C.col
        r, c = C.row[keep], C.col[keep]
        w = C.data[keep] / (np.sqrt(counts[r] * counts[c]) + self.shrink)
        self.R, self.S = R, sp.csr_matrix((w, (r, c)), shape=(n_items, n_items))
        return self

    def grids(self, members: np.ndarray) -> list[np.ndarray]:
        rows = np.fromiter((self.ncf.member_row(m) for m in members), dtype=np.int64, count=len(members))
        ncf = self.ncf.logit_grid(rows, self.item_rows)
        co = np.asarray((self.R[members] @ self.S).todense())
        return [ncf, np.broadcast_to(self.log_pop, ncf.shape), co]


class CoursesInteractionModel:
    """``evaluation.interactions.InteractionModel``: popularity + w_co * co-occurrence + w_ncf * NeuMF.

    The two weights are picked from small grids by NDCG@k on each member's last training positive, held
    out of the training rows (the evaluation's own protocol, one level down); ties go to the smaller
    weights, so with no signal in the held-out rows the model stays with popularity.
    """

    def __init__(
        self,
        co_weights: Sequence[float] | None = None,
        ncf_weights: Sequence[float] | None = None,
        history: int | None = None,
        shrink: float | None = None,
        k: int | None = None,
        ncf: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        """None: the ``[offline]`` value in config.toml."""
        self.co_weights = co_weights
        self.ncf_weights = ncf_weights
        self.history = history
        self.shrink = shrink
        self.k = k
        self.ncf = ncf
        self.seed = seed

    def _setting(self, name: str) -> Any:
        own = getattr(self, name)
        return load_settings()["offline"][name] if own is None else own

    def _signals(self) -> Signals:
        c = {**load_settings()["ncf"], **self._setting("ncf"), "seed": self.seed}
        keys = NeuMFClassifier().get_params().keys()
        ncf = NeuMFClassifier(**{k: (tuple(v) if k == "layers" else v) for k, v in c.items() if k in keys})
        return Signals(ncf, int(self._setting("history")), float(self._setting("shrink")))

    def fit(self, interactions: pd.DataFrame, n_members: int, n_items: int) -> CoursesInteractionModel:
        df = interactions.sort_values("timestamp", kind="stable").reset_index(drop=True)
        if "label" not in df:
            df = df.assign(label=1)
        self.weights_, self.selection_ = self._select(df, n_members, n_items)
        self.signals_ = self._signals().fit(df, n_members, n_items)
        return self

    def _select(
        self, df: pd.DataFrame, n_members: int, n_items: int
    ) -> tuple[tuple[float, float], dict[tuple[float, float], float]]:
        """(w_ncf, w_co) with the best inner leave-last-out NDCG@k, and every candidate's NDCG."""
        pos = df[df["label"] > 0].sort_values(["member", "timestamp"], kind="stable")
        multi = pos.groupby("member")["member"].transform("size") >= 2
        held = pos[multi].groupby("member", sort=False).tail(1)
        if len(held) < 20:
            return (0.0, 1.0), {}  # too few members to choose with: a modest fixed blend
        inner = df.drop(index=held.index)
        sig = self._signals().fit(inner, n_members, n_items)
        k = int(self._setting("k"))
        jitter = np.random.default_rng(self.seed).random(n_items) * 1e-9
        grid = [(float(wn), float(wc)) for wn in self._setting("ncf_weights") for wc in self._setting("co_weights")]
        gains = dict.fromkeys(grid, 0.0)
        for lo in range(0, len(held), BATCH):
            members = held["member"].to_numpy()[lo : lo + BATCH]
            targets = held["item"].to_numpy()[lo : lo + BATCH]
            ncf, pop, co = sig.grids(members)
            # as the evaluation does: every item the member has a training row for is not ranked
            seen = inner[inner["member"].isin(members)]
            row = pd.Series(np.arange(len(members)), index=members)
            blocked = np.zeros((len(members), n_items), dtype=bool)
            blocked[row.loc[seen["member"]].to_numpy(), seen["item"].to_numpy()] = True
            blocked[np.arange(len(members)), targets] = False
            for wn, wc in grid:
                s = wn * ncf + pop + wc * co
                s = (s - s.min(axis=1, keepdims=True)) / np.maximum(np.ptp(s, axis=1, keepdims=True), 1e-12) + jitter
                s[blocked] = -np.inf
                rank = (s > s[np.arange(len(members)), targets][:, None]).sum(axis=1)
                gains[(wn, wc)] += float(np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0).sum())
        results = {w: g / len(held) for w, g in gains.items()}
        best = max(results, key=lambda w: (results[w], -w[0], -w[1]))
        return best, results

    def score(self, members: np.ndarray) -> np.ndarray:
        ncf, pop, co = self.signals_.grids(np.asarray(members))
        wn, wc = self.weights_
        return wn * ncf + pop + wc * co
