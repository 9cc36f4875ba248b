"""The two click models on the same rows: a torch tower model (served) and a LightGBM baseline.

Both follow scikit-learn's API (params in ``__init__``, work in ``fit``). The tower model is trained
with torch, then keeps its weights as numpy arrays: a forward pass over a hundred candidates is a few
small matrix products, faster than torch's per-call overhead, and the pickle needs no torch objects.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted

from rankers.vectors import sigmoid


class TowerClassifier(ClassifierMixin, BaseEstimator):
    """Member tower x job tower + interaction tower, concatenated into a logistic head (BCE).

    Columns of ``X``: the engineered features first, then ``member_dims`` columns of the member's text
    vector, then ``job_dims`` columns of the job's. The towers learn a match between the two texts that
    the fixed cosines cannot express; the interaction tower reads the engineered features.
    """

    def __init__(
        self,
        member_dims: int = 0,
        job_dims: int = 0,
        dim: int = 16,
        hidden: int = 64,
        epochs: int = 12,
        lr: float = 3e-3,
        batch_size: int = 256,
        weight_decay: float = 1e-4,
        dropout: float = 0.1,
        seed: int = 0,
        progress: Any = None,
    ) -> None:
        self.member_dims = member_dims
        self.job_dims = job_dims
        self.dim = dim
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.seed = seed
        self.progress = progress

    def _split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_feat = X.shape[1] - self.member_dims - self.job_dims
        return X[:, :n_feat], X[:, n_feat : n_feat + self.member_dims], X[:, n_feat + self.member_dims :]

    def fit(self, X: np.ndarray, y: np.ndarray) -> TowerClassifier:
        import torch
        from torch import nn

        torch.set_num_threads(1)
        torch.manual_seed(self.seed)
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=np.float32)
        self.classes_ = np.array([0, 1])
        F, Mv, Jv = self._split(X)
        self.mean_ = F.mean(axis=0)
        self.scale_ = np.where(F.std(axis=0) > 1e-6, F.std(axis=0), 1.0).astype(np.float32)
        F = (F - self.mean_) / self.scale_

        def tower(n_in: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Linear(n_in, self.hidden), nn.ReLU(), nn.Dropout(self.dropout), nn.Linear(self.hidden, self.dim)
            )

        net = nn.ModuleDict(
            {
                "member": tower(max(1, self.member_dims)),
                "job": tower(max(1, self.job_dims)),
                "inter": tower(F.shape[1]),
                "head": nn.Sequential(nn.Linear(3 * self.dim, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1)),
            }
        )
        base = float(np.clip(y.mean(), 1e-4, 1 - 1e-4))
        with torch.no_grad():
            net["head"][2].bias.fill_(float(np.log(base / (1 - base))))
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = nn.BCEWithLogitsLoss()
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in (F, self._pad(Mv), self._pad(Jv), y)]
        gen = torch.Generator().manual_seed(self.seed)
        task = self.progress.add_task("tower epochs", total=self.epochs) if self.progress is not None else None
        self.loss_curve_: list[float] = []
        for _ in range(self.epochs):
            net.train()
            perm = torch.randperm(len(y), generator=gen)
            total = 0.0
            for lo in range(0, len(y), self.batch_size):
                idx = perm[lo : lo + self.batch_size]
                f, m, j, t = (a[idx] for a in tensors)
                logit = self._forward_torch(net, f, m, j)
                loss = loss_fn(logit, t)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            self.loss_curve_.append(total / len(y))
            if task is not None:
                self.progress.update(task, advance=1)
        net.eval()
        self.weights_ = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
        self.progress = None  # a rich Progress does not pickle; it is only needed while fitting
        return self

    @staticmethod
    def _pad(a: np.ndarray) -> np.ndarray:
        return a if a.shape[1] else np.zeros((len(a), 1), dtype=np.float32)

    def _forward_torch(self, net: Any, f: Any, m: Any, j: Any) -> Any:
        import torch

        mt, jt = net["member"](m), net["job"](j)
        z = torch.cat([mt * jt, jt, net["inter"](f)], dim=1)
        return net["head"](z).squeeze(1)

    # ------------------------------------------------------------------ numpy serving path
    def _mlp(self, name: str, x: np.ndarray) -> np.ndarray:
        w = self.weights_
        h = np.maximum(x @ w[f"{name}.0.weight"].T + w[f"{name}.0.bias"], 0.0)
        return h @ w[f"{name}.3.weight"].T + w[f"{name}.3.bias"]

    def member_tower(self, m: np.ndarray) -> np.ndarray:
        return self._mlp("member", self._pad(np.atleast_2d(m).astype(np.float32)))

    def job_tower(self, j: np.ndarray) -> np.ndarray:
        return self._mlp("job", self._pad(np.atleast_2d(j).astype(np.float32)))

    def logits(self, F: np.ndarray, member_out: np.ndarray, job_out: np.ndarray) -> np.ndarray:
        """Raw scores from the engineered features and the (possibly cached) tower outputs."""
        check_is_fitted(self, "weights_")
        w = self.weights_
        inter = self._mlp("inter", (np.asarray(F, dtype=np.float32) - self.mean_) / self.scale_)
        z = np.hstack([member_out * job_out, job_out, inter])
        h = np.maximum(z @ w["head.0.weight"].T + w["head.0.bias"], 0.0)
        return (h @ w["head.2.weight"].T + w["head.2.bias"]).ravel()

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        F, Mv, Jv = self._split(np.asarray(X, dtype=np.float32))
        return self.logits(F, self.member_tower(Mv), self.job_tower(Jv))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = sigmoid(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


def lightgbm_model(params: dict[str, Any]) -> Any:
    """The gradient-boosted baseline of the write-up, single-threaded."""
    from lightgbm import LGBMClassifier

    return LGBMClassifier(
        n_estimators=params["lgb_n_estimators"],
        learning_rate=params["lgb_learning_rate"],
        num_leaves=params["lgb_num_leaves"],
        min_child_samples=params["lgb_min_child_samples"],
        subsample=params["lgb_subsample"],
        subsample_freq=1,
        colsample_bytree=params["lgb_colsample_bytree"],
        random_state=params["seed"],
        n_jobs=1,
        verbose=-1,
    )


# ---------------------------------------------------------------------------------------------- metrics
def auc(y: np.ndarray, score: np.ndarray) -> float:
    y = np.asarray(y)
    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan")


def map_at_k(request_ids: np.ndarray, y: np.ndarray, score: np.ndarray, k: int) -> float:
    """Mean over requests with a click of AP@k: precision at each clicked rank <= k, over min(k, clicks).

    Ties are broken by row order, so a constant score gets the logged order, not a lucky one.
    """
    df = pd.DataFrame({"r": np.asarray(request_ids), "y": np.asarray(y, dtype=float), "s": -np.asarray(score)})
    df["pos"] = np.arange(len(df))
    df = df.sort_values(["r", "s", "pos"], kind="stable")
    df["rank"] = df.groupby("r", sort=False).cumcount()
    df["hits"] = df.groupby("r", sort=False)["y"].cumsum()
    top = df[df["rank"] < k]
    ap = (top["y"] * top["hits"] / (top["rank"] + 1)).groupby(top["r"]).sum()
    n_pos = df.groupby("r")["y"].sum()
    has = n_pos[n_pos > 0]
    if has.empty:
        return float("nan")
    return float((ap.reindex(has.index, fill_value=0.0) / np.minimum(has, k)).mean())
