"""Neural collaborative filtering (He et al., WWW 2017): NeuMF, a GMF tower and an MLP tower over member
and course id embeddings, fused by one output layer.

Trained in torch on logged impressions (label: clicked) plus uniformly sampled courses as extra negatives;
row 0 of each embedding table is the unknown id, trained on a random share of rows, so a new member or
course scores as "anyone". After fitting the weights are exported to numpy and the torch module is
dropped: serving is a few small matrix products (the course half of the MLP's first layer is
precomputed per course), and the pickled model needs no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from rankers.vectors import sigmoid


class NeuMFClassifier(ClassifierMixin, BaseEstimator):
    """NeuMF over ``X[:, 0]`` member ids and ``X[:, 1]`` course ids (any hashable values).

    Optional ``X[:, 2]`` and ``X[:, 3]`` are side ids (the member's industry, the course's category)
    whose embeddings are added to the member's and the course's: a member or course with few clicks
    then borrows from everyone sharing its side id, which ids alone cannot do on sparse course clicks.
    ``validation_fraction`` holds out the last rows (time order) and keeps the epoch with the lowest
    held-out log loss.
    """

    def __init__(
        self,
        gmf_dim: int = 8,
        mlp_dim: int = 16,
        layers: Sequence[int] = (32, 16),
        epochs: int = 12,
        lr: float = 0.01,
        batch_size: int = 1024,
        weight_decay: float = 1e-3,
        dense_weight_decay: float = 1e-5,
        negatives: int = 2,
        negative_weight: float = 0.5,
        unknown_rate: float = 0.05,
        validation_fraction: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.gmf_dim = gmf_dim
        self.mlp_dim = mlp_dim
        self.layers = layers
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.dense_weight_decay = dense_weight_decay
        self.negatives = negatives
        self.negative_weight = negative_weight
        self.unknown_rate = unknown_rate
        self.validation_fraction = validation_fraction
        self.seed = seed

    # ------------------------------------------------------------------------------------------ fit
    def fit(
        self,
        X: np.ndarray | pd.DataFrame,
        y: np.ndarray,
        sample_weight: np.ndarray | None = None,
        on_epoch: Callable[[int, float], None] | None = None,
    ) -> NeuMFClassifier:
        """``on_epoch(epoch, mean_loss)`` is called after each epoch (progress bars)."""
        if not self.layers:
            raise ValueError("NeuMF needs at least one MLP layer")
        X = np.asarray(X, dtype=object)
        y = np.asarray(y, dtype=np.float32)
        self.classes_ = np.array([0, 1])
        cols = []
        self.indexes_: list[dict[str, int]] = []
        for j in range(4):
            if j < X.shape[1]:
                codes, uniques = pd.factorize(pd.Series(X[:, j]).astype(str))
                self.indexes_.append({v: i + 1 for i, v in enumerate(uniques)})
                cols.append(codes.astype(np.int64) + 1)
            else:
                self.indexes_.append({})
                cols.append(np.zeros(len(y), dtype=np.int64))
        m, c, ms, cs = cols
        course_side = np.zeros(len(self.indexes_[1]) + 1, dtype=np.int64)
        course_side[c] = cs  # each course's (latest) side id, for its sampled negatives
        w = np.ones(len(y), dtype=np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32)
        sizes = [len(ix) + 1 for ix in self.indexes_]
        self._train(m, c, ms, cs, y, w, sizes, course_side, on_epoch)
        return self

    def _train(
        self,
        m: np.ndarray,
        c: np.ndarray,
        ms: np.ndarray,
        cs: np.ndarray,
        y: np.ndarray,
        w: np.ndarray,
        sizes: list[int],
        course_side: np.ndarray,
        on_epoch: Callable[[int, float], None] | None,
    ) -> None:
        """Fit on 1-based codes (0 is the unknown id) with Adam; sampled negatives are fresh each epoch."""
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        n_val = int(len(y) * self.validation_fraction) if self.validation_fraction > 0 else 0
        n_fit = len(y) - n_val
        net = _NeuMF(sizes, self.gmf_dim, self.mlp_dim, tuple(self.layers))
        # Only the id tables are shrunk hard: side ids and the towers see every row and need less.
        ids = [*net.gmf[:2].parameters(), *net.mlp_emb[:2].parameters()]  # type: ignore[attr-defined]
        rest = [*net.gmf[2:].parameters(), *net.mlp_emb[2:].parameters(), *net.mlp.parameters(), *net.out.parameters()]  # type: ignore[attr-defined]
        opt = torch.optim.Adam(
            [
                {"params": ids, "weight_decay": self.weight_decay},
                {"params": rest, "weight_decay": self.dense_weight_decay},
            ],
            lr=self.lr,
        )
        val = [torch.from_numpy(a[n_fit:]) for a in (m, c, ms, cs, y, w)]
        fit_cols = [a[:n_fit] for a in (m, c, ms, cs)]
        pos = y[:n_fit] > 0
        best, best_loss, self.best_epoch_ = None, np.inf, self.epochs - 1
        for epoch in range(self.epochs):
            k = int(self.negatives) * int(pos.sum())
            neg_c = rng.integers(1, sizes[1], k)
            em, ec, ems, ecs = (np.concatenate([a, np.repeat(a[pos], int(self.negatives))]) for a in fit_cols)
            ec[n_fit:] = neg_c
            ecs[n_fit:] = course_side[neg_c]
            ey = np.concatenate([y[:n_fit], np.zeros(k, dtype=np.float32)])
            ew = np.concatenate([w[:n_fit], np.full(k, self.negative_weight, dtype=np.float32)])
            unk = rng.random((4, len(ey))) < self.unknown_rate
            em, ec = np.where(unk[0], 0, em), np.where(unk[1], 0, ec)
            ems, ecs = np.where(unk[2], 0, ems), np.where(unk[3], 0, ecs)
            order = rng.permutation(len(ey))
            t = [torch.from_numpy(a[order]) for a in (em, ec, ems, ecs, ey, ew)]
            total = 0.0
            net.train()
            for lo in range(0, len(ey), self.batch_size):
                b = [a[lo : lo + self.batch_size] for a in t]
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    net(*b[:4]), b[4], weight=b[5], reduction="sum"
                )
                opt.zero_grad()
                (loss / b[5].sum()).backward()
                opt.step()
                total += float(loss.detach())
            if n_val:
                with torch.no_grad():
                    vl = float(
                        torch.nn.functional.binary_cross_entropy_with_logits(net(*val[:4]), val[4], weight=val[5])
                    )
                if vl < best_loss:
                    best_loss, self.best_epoch_ = vl, epoch
                    best = {name: v.clone() for name, v in net.state_dict().items()}
            if on_epoch is not None:
                on_epoch(epoch, total / max(float(ew.sum()), 1e-12))
        if best is not None:
            net.load_state_dict(best)
        self._export(net)

    def _export(self, net: object) -> None:
        """Numpy copies of the weights: the GMF output weights folded into the course tables, and the
        MLP's first layer split into member and course halves (sums of embeddings stay sums)."""
        import torch

        with torch.no_grad():
            p = {k: v.detach().cpu().numpy().astype(np.float64) for k, v in net.state_dict().items()}  # type: ignore[attr-defined]
        d, g = self.mlp_dim, self.gmf_dim
        w1, b1 = p["mlp.0.weight"], p["mlp.0.bias"]
        w_gmf = p["out.weight"][0, :g]
        self.member_gmf_, self.member_side_gmf_ = p["gmf.0.weight"], p["gmf.2.weight"]
        self.course_gmf_, self.course_side_gmf_ = p["gmf.1.weight"] * w_gmf, p["gmf.3.weight"] * w_gmf
        self.member_h1_ = p["mlp_emb.0.weight"] @ w1[:, :d].T + b1
        self.member_side_h1_ = p["mlp_emb.2.weight"] @ w1[:, :d].T
        self.course_h1_ = p["mlp_emb.1.weight"] @ w1[:, d:].T
        self.course_side_h1_ = p["mlp_emb.3.weight"] @ w1[:, d:].T
        self.hidden_ = [(p[f"mlp.{2 * i}.weight"].T, p[f"mlp.{2 * i}.bias"]) for i in range(1, len(self.layers))]
        self.out_mlp_ = p["out.weight"][0, g:]
        self.out_bias_ = float(p["out.bias"][0])

    # -------------------------------------------------------------------------------------- predict
    def member_row(self, member_id: object) -> int:
        return self.indexes_[0].get(str(member_id), 0)

    def member_side_row(self, value: object) -> int:
        return self.indexes_[2].get(str(value), 0)

    def course_rows(self, course_ids: Sequence[object]) -> np.ndarray:
        return self._rows(1, course_ids)

    def course_side_rows(self, values: Sequence[object]) -> np.ndarray:
        return self._rows(3, values)

    def _rows(self, j: int, values: Sequence[object]) -> np.ndarray:
        get = self.indexes_[j].get
        return np.fromiter((get(str(v), 0) for v in values), dtype=np.int64, count=len(values))

    def logits_rows(
        self, m: np.ndarray | int, c: np.ndarray, ms: np.ndarray | int = 0, cs: np.ndarray | int = 0
    ) -> np.ndarray:
        """Logits for (member, course) row pairs; a scalar member row broadcasts (the serving path)."""
        mg = self.member_gmf_[m] + self.member_side_gmf_[ms]
        cg = self.course_gmf_[c] + self.course_side_gmf_[cs]
        h = np.maximum(
            self.member_h1_[m] + self.member_side_h1_[ms] + self.course_h1_[c] + self.course_side_h1_[cs], 0.0
        )
        for W, b in self.hidden_:
            h = np.maximum(h @ W + b, 0.0)
        return (mg * cg).sum(axis=-1) + h @ self.out_mlp_ + self.out_bias_

    def logit_grid(self, m: np.ndarray, c: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
        """(len(m), len(c)) logits for id rows without side ids, in chunks that bound the MLP's memory."""
        out = np.empty((len(m), len(c)))
        mg = self.member_gmf_[m] + self.member_side_gmf_[0]
        cg = self.course_gmf_[c] + self.course_side_gmf_[0]
        gmf = mg @ cg.T
        mh1 = self.member_h1_[m] + self.member_side_h1_[0]
        ch1 = self.course_h1_[c] + self.course_side_h1_[0]
        step = max(1, chunk // max(1, len(c) * ch1.shape[1]))
        for lo in range(0, len(m), step):
            h = np.maximum(mh1[lo : lo + step, None, :] + ch1[None, :, :], 0.0)
            for W, b in self.hidden_:
                h = np.maximum(h @ W + b, 0.0)
            out[lo : lo + step] = gmf[lo : lo + step] + h @ self.out_mlp_ + self.out_bias_
        return out

    def decision_function(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "out_mlp_")
        X = np.asarray(X, dtype=object)
        rows = [self._rows(j, X[:, j]) if j < X.shape[1] else 0 for j in range(4)]
        return self.logits_rows(*rows)

    def predict_proba(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        p = sigmoid(self.decision_function(X))
        return np.column_stack([1 - p, p])

    def predict(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(int)


def _NeuMF(sizes: list[int], gmf_dim: int, mlp_dim: int, layers: tuple[int, ...]) -> object:
    """The torch module, built lazily so that importing this file (serving) does not import torch.

    ``sizes``: rows of the member, course, member-side and course-side tables (row 0: unknown).
    """
    import torch
    from torch import nn

    class NeuMF(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gmf = nn.ModuleList(nn.Embedding(n, gmf_dim) for n in sizes)
            self.mlp_emb = nn.ModuleList(nn.Embedding(n, mlp_dim) for n in sizes)
            for e in (*self.gmf, *self.mlp_emb):
                nn.init.normal_(e.weight, std=0.05)
            mods: list[nn.Module] = []
            width = 2 * mlp_dim
            for h in layers:
                mods += [nn.Linear(width, h), nn.ReLU()]
                width = h
            self.mlp = nn.Sequential(*mods)
            self.out = nn.Linear(gmf_dim + width, 1)

        def forward(self, m: torch.Tensor, c: torch.Tensor, ms: torch.Tensor, cs: torch.Tensor) -> torch.Tensor:
            g, e = self.gmf, self.mlp_emb
            gmf = (g[0](m) + g[2](ms)) * (g[1](c) + g[3](cs))
            mlp = self.mlp(torch.cat([e[0](m) + e[2](ms), e[1](c) + e[3](cs)], dim=1))
            return self.out(torch.cat([gmf, mlp], dim=1)).squeeze(1)

    return NeuMF()
