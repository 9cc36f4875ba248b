"""The network FPR's offline model: what ``feedrank fpr evaluate network`` fits on an interaction file.

An interaction file only has members, items and times, so the model learns from those alone: item
popularity, when an item was active relative to the member's own last activity (feed posts live for
a day or two, and a member's next click is on something alive then), co-occurrence with the member's
history, and repeat interactions. A LightGBM classifier ranks (member, item) pairs over these
features; it is trained the way it is evaluated: each member's last training interaction is held out
as the positive, against sampled items the member had not interacted with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from rankers.network.settings import section

OFFLINE_FEATURES: tuple[str, ...] = (
    "log_popularity",
    "log_members",
    "member_item_count",
    "history_length",
    "cooc",
    "active_before_1",
    "active_after_1",
    "active_before_2",
    "active_after_2",
    "active_before_3",
    "active_after_3",
)
# More popularity, repeats, co-occurrence or activity around the member's time never lowers a score:
# with a few hundred held-out positives, unconstrained trees fit noise in exactly those features.
MONOTONE: dict[str, int] = {
    "log_popularity": 1,
    "log_members": 1,
    "member_item_count": 1,
    "cooc": 1,
    **{f"active_{side}_{k}": 1 for side in ("before", "after") for k in (1, 2, 3)},
}
TIE_BREAK = 1e-4
ROWS_PER_BATCH = 200_000  # (member, item) rows featurized at once while scoring
# Activity windows around the member's last interaction, as shares of the data's time span; time is
# cut into at most MAX_BINS bins (fewer for a very large catalogue, to bound the per-item table).
WINDOWS = (1 / 64, 1 / 16, 1 / 4)
MAX_BINS = 256
MAX_BIN_CELLS = 2**25


def n_bins_for(n_items: int) -> int:
    return int(np.clip(MAX_BIN_CELLS // max(n_items, 1), 16, MAX_BINS))


@dataclass
class _State:
    """What the features are computed from: one interaction table's statistics."""

    n_items: int
    popularity: np.ndarray  # (n_items,) positive interactions
    members_per_item: np.ndarray  # (n_items,) distinct members
    history: sp.csr_matrix  # (n_members, n_items) counts
    cooc: sp.csr_matrix  # (n_items, n_items) cosine co-occurrence, pruned per row
    ref_bin: np.ndarray  # (n_members,) bin of the member's last interaction, NaN without one
    cum_bins: np.ndarray  # (n_items, n_bins + 1) cumulative interactions per time bin, float32

    @property
    def n_bins(self) -> int:
        return self.cum_bins.shape[1] - 1

    @staticmethod
    def of(frame: pd.DataFrame, n_members: int, n_items: int, t0: float, span: float, cooc_top: int) -> _State:
        """Statistics of ``frame``'s positives; time is binned over [t0, t0 + span]."""
        n_bins = n_bins_for(n_items)
        pos = frame[frame["label"] > 0]
        m = pos["member"].to_numpy(dtype=np.int64)
        i = pos["item"].to_numpy(dtype=np.int64)
        rel = (pos["timestamp"].to_numpy(dtype=np.float64) - t0) / max(span, 1e-9)
        b = np.clip(rel * n_bins, 0, n_bins - 1e-6)
        popularity = np.bincount(i, minlength=n_items).astype(np.float64)
        history = sp.csr_matrix((np.ones(len(m)), (m, i)), shape=(n_members, n_items))
        history.sum_duplicates()
        binary = history.copy()
        binary.data[:] = 1.0
        members_per_item = np.asarray(binary.sum(axis=0)).ravel()
        cooc = _cosine_cooc(binary, members_per_item, cooc_top)
        ref_bin = np.full(n_members, np.nan)
        np.fmax.at(ref_bin, m, b)
        counts = np.zeros((n_items, n_bins), dtype=np.float32)
        np.add.at(counts, (i, b.astype(np.int64)), 1.0)
        cum_bins = np.concatenate([np.zeros((n_items, 1), dtype=np.float32), np.cumsum(counts, axis=1)], axis=1)
        return _State(n_items, popularity, members_per_item, history, cooc, ref_bin, cum_bins)

    def features(self, members: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(len(members), len(items), F): every listed member against every listed item."""
        b, n = len(members), len(items)
        x = np.full((b, n, len(OFFLINE_FEATURES)), np.nan, dtype=np.float32)
        x[:, :, 0] = np.log1p(self.popularity[items])[None, :]
        x[:, :, 1] = np.log1p(self.members_per_item[items])[None, :]
        hist = self.history[members][:, items]
        x[:, :, 2] = hist.toarray()
        x[:, :, 3] = np.asarray(self.history[members].sum(axis=1)).reshape(b, 1)
        hb = self.history[members].copy()
        hb.data[:] = 1.0
        x[:, :, 4] = (hb @ self.cooc)[:, items].toarray()
        ref = self.ref_bin[members]
        has = ~np.isnan(ref)
        if has.any():
            r = ref[has]
            nb = self.n_bins
            every = len(items) == self.n_items and np.array_equal(items, np.arange(self.n_items))
            cum = self.cum_bins if every else self.cum_bins[items]  # (n, n_bins + 1), no copy for all
            mid = np.floor(r).astype(np.int64)
            for k, share in enumerate(WINDOWS):
                w = max(1, round(share * nb))
                lo = np.clip(mid - w, 0, nb)
                hi = np.clip(mid + w + 1, 0, nb)
                at_mid = cum[:, mid].T
                x[has, :, 5 + 2 * k] = at_mid - cum[:, lo].T
                x[has, :, 6 + 2 * k] = cum[:, hi].T - at_mid
        return x


def _cosine_cooc(binary: sp.csr_matrix, members_per_item: np.ndarray, top: int) -> sp.csr_matrix:
    """Item-item cosine of their member sets, no self-pairs, each item's ``top`` neighbours kept."""
    c = (binary.T @ binary).tocsr().astype(np.float64)
    c.setdiag(0.0)
    c.eliminate_zeros()
    norm = np.sqrt(np.maximum(members_per_item, 1.0))
    c = sp.diags(1.0 / norm) @ c @ sp.diags(1.0 / norm)
    c = c.tocsr()
    if top > 0:
        rows, cols, vals = [], [], []
        for r in range(c.shape[0]):
            lo, hi = c.indptr[r], c.indptr[r + 1]
            if hi - lo > top:
                keep = lo + np.argpartition(-c.data[lo:hi], top - 1)[:top]
            else:
                keep = np.arange(lo, hi)
            rows.append(np.full(len(keep), r))
            cols.append(c.indices[keep])
            vals.append(c.data[keep])
        if rows:
            c = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=c.shape)
    return c


class NetworkInteractionModel:
    """LightGBM over interaction-derived features, trained on a leave-last-out split of the training data.

    Hyperparameters come from ``config.toml``'s ``[offline]`` section, overridden by ``params``; the
    evaluator builds it with no arguments.
    """

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.params = params

    def fit(self, interactions: pd.DataFrame, n_members: int, n_items: int) -> NetworkInteractionModel:
        cfg = section("offline", self.params)
        frame = interactions[["member", "item", "timestamp", "label"]].reset_index(drop=True)
        frame = frame.assign(row=np.arange(len(frame)))
        ts = frame["timestamp"].to_numpy(dtype=np.float64)
        self.t0_ = float(ts.min()) if len(ts) else 0.0
        self.span_ = float(ts.max()) - self.t0_ if len(ts) else 1.0
        self.n_items_ = n_items
        self.pool_size_ = max(1, int(cfg["pool_size"]))
        top = int(cfg["cooc_top"])
        rng = np.random.default_rng(int(cfg["random_state"]))

        # the same protocol one level down: fold k holds out each member's k-th last training positive,
        # with the features computed from the interactions before it (and everyone else's)
        pos = frame[frame["label"] > 0].sort_values(["member", "timestamp", "row"], kind="stable")
        xs, ys = [], []
        dropped = pd.Index([])
        for _ in range(int(cfg["inner_folds"])):
            last = pos.drop(index=dropped).groupby("member", sort=False).tail(1)
            if last.empty:
                break
            dropped = dropped.union(last.index)
            if len(last) > int(cfg["max_train_members"]):
                last = last.sample(int(cfg["max_train_members"]), random_state=int(cfg["random_state"]))
            inner = _State.of(frame.drop(index=dropped), n_members, n_items, self.t0_, self.span_, top)
            x, y = self._examples(inner, last, int(cfg["negatives_per_positive"]), rng)
            xs.append(x)
            ys.append(y)
        x = np.concatenate(xs) if xs else np.zeros((0, len(OFFLINE_FEATURES)))
        y = np.concatenate(ys) if ys else np.zeros(0, dtype=int)
        self.model_: lgb.LGBMClassifier | None = None
        if len(np.unique(y)) == 2:
            self.model_ = lgb.LGBMClassifier(
                objective="binary",
                n_estimators=int(cfg["n_estimators"]),
                learning_rate=float(cfg["learning_rate"]),
                num_leaves=int(cfg["num_leaves"]),
                min_child_samples=int(cfg["min_child_samples"]),
                subsample=0.8,
                subsample_freq=1,
                colsample_bytree=0.8,
                monotone_constraints=[MONOTONE.get(f, 0) for f in OFFLINE_FEATURES],
                random_state=int(cfg["random_state"]),
                n_jobs=1,
                verbose=-1,
            ).fit(x, y)
        self.state_ = _State.of(frame, n_members, n_items, self.t0_, self.span_, top)
        return self

    def _examples(
        self, state: _State, targets: pd.DataFrame, negatives: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each target's positive against ``negatives`` items outside the member's (inner) history:
        half uniform (what the evaluation ranks against), half by popularity (the hard ones)."""
        members = targets["member"].to_numpy(dtype=np.int64)
        items = targets["item"].to_numpy(dtype=np.int64)
        n = state.n_items
        pop = state.popularity + 1.0
        half = negatives // 2
        uni = rng.integers(0, n, (len(members), negatives - half))
        by_pop = rng.choice(n, size=(len(members), half), p=pop / pop.sum())
        cand = np.concatenate([items[:, None], uni, by_pop], axis=1)
        xs, ys = [], []
        for lo in range(0, len(members), 256):
            mem = members[lo : lo + 256]
            c = cand[lo : lo + 256]
            # features of each member's own candidates only: compute over their union, then pick
            union, inv = np.unique(c, return_inverse=True)
            f = state.features(mem, union)
            picked = f[np.arange(len(mem))[:, None], inv.reshape(c.shape)]
            hist = state.history[mem][:, union].toarray()[np.arange(len(mem))[:, None], inv.reshape(c.shape)]
            label = np.zeros(c.shape)
            label[:, 0] = 1.0
            keep = np.ones(c.shape, dtype=bool)
            keep[:, 1:] = (hist[:, 1:] == 0) & (c[:, 1:] != c[:, :1])
            xs.append(picked[keep])
            ys.append(label[keep])
        return np.concatenate(xs), np.concatenate(ys).astype(int)

    def score(self, members: np.ndarray) -> np.ndarray:
        """Model scores over the whole catalogue; beyond ``pool_size`` items, only the most popular
        ones and each member's history and co-occurring items are run through the trees, and the rest
        rank below them by popularity (a catalogue of millions stays a matrix product, not a forest)."""
        members = np.asarray(members, dtype=np.int64)
        n = self.n_items_
        out = np.empty((len(members), n))
        log_pop = np.log1p(self.state_.popularity)
        pooled = n > self.pool_size_
        if pooled:
            base = np.argpartition(-self.state_.popularity, self.pool_size_ - 1)[: self.pool_size_]
        step = max(1, ROWS_PER_BATCH // min(n, self.pool_size_ * 2))
        for lo in range(0, len(members), step):
            mem = members[lo : lo + step]
            items = np.arange(n)
            if pooled:
                hb = self.state_.history[mem]
                near = (hb @ self.state_.cooc).tocsr()
                items = np.union1d(base, np.union1d(hb.indices, near.indices))
            f = self.state_.features(mem, items)
            if self.model_ is None:
                raw = f[:, :, 0].astype(np.float64)
            else:
                flat = f.reshape(-1, f.shape[2])
                raw = self.model_.booster_.predict(flat, raw_score=True, num_threads=1).reshape(len(mem), -1)
            # trees are piecewise constant: break their ties by popularity and co-occurrence
            raw = raw + TIE_BREAK * (f[:, :, 0] + f[:, :, 4])
            if pooled:
                block = np.broadcast_to((raw.min() - 1.0 + TIE_BREAK * log_pop)[None, :], (len(mem), n)).copy()
                block[:, items] = raw
                raw = block
            out[lo : lo + step] = raw
        return out
