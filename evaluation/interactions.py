"""Leave-last-out evaluation of a recommender on any interaction file, and held-out-edge evaluation of
link prediction on any edge file, each against its simple baseline.

Protocol (interactions): each member's last positive interaction by timestamp (ties: the later row in
the file) is held out; the model is fitted on the rest; every item the member did not interact with
in training is ranked; ``hr@k`` is the share of members whose held-out item is in the top k, and
``ndcg@k`` is 1/log2(rank + 2) when it is (binary relevance, rank from 0). Equal scores are ordered by
a seeded random permutation of the items, so a constant model scores like a random one, not better.

Protocol (edges): a seeded ``holdout`` share of the edges is removed; for each member with a removed
edge, every member who is neither the member nor a training neighbour is ranked; ``recall@k`` is the
share of the member's removed edges found in the top k, and ``ndcg@k`` uses binary gains with the
ideal ordering of min(k, removed) hits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

INTERACTION_COLUMNS = ["member_id", "item_id", "timestamp"]
EDGE_COLUMNS = ["member_a", "member_b"]


class InteractionFileError(ValueError):
    """An interaction or edge file that cannot be evaluated; the message names the file and problem."""


class InteractionModel(Protocol):
    def fit(self, interactions: pd.DataFrame, n_members: int, n_items: int) -> InteractionModel:
        """``interactions``: integer ``member``, ``item``, float ``timestamp``, int ``label`` (1 = positive)."""
        ...

    def score(self, members: np.ndarray) -> np.ndarray:
        """(len(members), n_items) scores; higher ranks first."""
        ...


class EdgeModel(Protocol):
    def fit(self, edges: np.ndarray, n_nodes: int) -> EdgeModel:
        """``edges``: (E, 2) integer pairs, undirected, each pair once."""
        ...

    def score(self, nodes: np.ndarray) -> np.ndarray:
        """(len(nodes), n_nodes) scores of each node as a new connection of each given node."""
        ...


@dataclass(frozen=True)
class Encoded:
    frame: pd.DataFrame  # member, item, timestamp, label, row
    members: pd.Index
    items: pd.Index


def read_interactions(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise InteractionFileError(f"interaction file {path} does not exist")
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (ValueError, OSError, ImportError) as err:  # pandas: parse errors, unreadable files
        raise InteractionFileError(f"interaction file {path}: {err}") from None
    missing = [c for c in INTERACTION_COLUMNS if c not in df]
    if missing:
        raise InteractionFileError(f"interaction file {path} lacks column(s) {missing}; has {list(df.columns)}")
    ts = pd.to_numeric(df["timestamp"], errors="coerce")
    if ts.isna().any():
        rows = np.flatnonzero(ts.isna().to_numpy())[:10].tolist()
        raise InteractionFileError(f"interaction file {path}: non-numeric timestamp in row(s) {rows}")
    df["timestamp"] = ts.astype(float)
    if "label" in df:
        lab = pd.to_numeric(df["label"], errors="coerce")
        if lab.isna().any():
            rows = np.flatnonzero(lab.isna().to_numpy())[:10].tolist()
            raise InteractionFileError(f"interaction file {path}: non-numeric label in row(s) {rows}")
        df["label"] = (lab > 0).astype(int)
    if df[["member_id", "item_id"]].isna().any().any():
        rows = np.flatnonzero(df[["member_id", "item_id"]].isna().any(axis=1).to_numpy())[:10].tolist()
        raise InteractionFileError(f"interaction file {path}: empty member_id or item_id in row(s) {rows}")
    return df


def encode(df: pd.DataFrame) -> Encoded:
    members, m_codes = _factorize(df["member_id"])
    items, i_codes = _factorize(df["item_id"])
    frame = pd.DataFrame(
        {
            "member": m_codes,
            "item": i_codes,
            "timestamp": df["timestamp"].to_numpy(dtype=float),
            "label": df["label"].to_numpy(dtype=int) if "label" in df else np.ones(len(df), dtype=int),
            "row": np.arange(len(df)),
        }
    )
    return Encoded(frame, members, items)


def _factorize(col: pd.Series) -> tuple[pd.Index, np.ndarray]:
    codes, uniques = pd.factorize(col.astype(str))
    return pd.Index(uniques), codes.astype(np.int64)


def leave_last_out(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test): test holds each member's last positive row (by timestamp, then file order)."""
    pos = frame[frame["label"] > 0].sort_values(["member", "timestamp", "row"], kind="stable")
    last = pos.groupby("member", sort=False).tail(1)
    train = frame.drop(index=last.index)
    return train.reset_index(drop=True), last.reset_index(drop=True)


def _tie_break(n: int, seed: int) -> np.ndarray:
    """A tiny seeded jitter, below any real score difference, that orders equal scores at random."""
    return np.random.default_rng(seed).random(n) * 1e-9


def _scaled(scores: np.ndarray) -> np.ndarray:
    """Scores rescaled per row to [0, 1] so the jitter stays below every real difference."""
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf, posinf=np.finfo(float).max)
    finite = np.where(np.isfinite(s), s, np.nan)
    lo = np.nanmin(finite, axis=1, keepdims=True)
    hi = np.nanmax(finite, axis=1, keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    out = (s - np.nan_to_num(lo)) / span
    out[~np.isfinite(s)] = -1.0
    return out


def _batches(n: int, size: int) -> Iterator[slice]:
    for lo in range(0, n, size):
        yield slice(lo, min(n, lo + size))


def _excluded(train: pd.DataFrame, members: np.ndarray, n_items: int) -> sp.csr_matrix:
    """Rows: the evaluated members; columns: items each interacted with in training."""
    row_of = pd.Series(np.arange(len(members)), index=members)
    t = train[train["member"].isin(members)]
    r = row_of.loc[t["member"].to_numpy()].to_numpy()
    m = sp.csr_matrix((np.ones(len(t)), (r, t["item"].to_numpy())), shape=(len(members), n_items))
    m.data[:] = 1.0
    return m


def _hit_metrics(ranks: np.ndarray, k: int) -> dict[str, float]:
    hit = ranks < k
    gain = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    return {
        f"hr@{k}": float(hit.mean()) if len(hit) else float("nan"),
        f"ndcg@{k}": float(gain.mean()) if len(hit) else float("nan"),
    }


def evaluate_interactions(
    model: InteractionModel,
    df: pd.DataFrame,
    k: int = 10,
    max_members: int | None = None,
    seed: int = 0,
    batch: int = 512,
) -> dict[str, dict[str, float]]:
    """Leave-last-out ``hr@k`` and ``ndcg@k`` of the model and of training popularity."""
    enc = encode(df)
    n_members, n_items = len(enc.members), len(enc.items)
    train, test = leave_last_out(enc.frame)
    if test.empty:
        raise InteractionFileError("no member has a positive interaction to hold out")
    if max_members is not None and len(test) > max_members:
        test = test.sample(max_members, random_state=seed).sort_values("member").reset_index(drop=True)
    model.fit(train, n_members, n_items)
    popularity = np.bincount(train.loc[train["label"] > 0, "item"], minlength=n_items).astype(np.float64)
    jitter = _tie_break(n_items, seed)
    members = test["member"].to_numpy()
    targets = test["item"].to_numpy()
    excl = _excluded(train, members, n_items)
    ranks = {"model": np.empty(len(test)), "popularity": np.empty(len(test))}
    for sl in _batches(len(test), batch):
        mem, tgt = members[sl], targets[sl]
        block = excl[sl].toarray().astype(bool)
        block[np.arange(len(tgt)), tgt] = False  # a re-interaction with a training item still counts
        for name, scores in (("model", model.score(mem)), ("popularity", np.tile(popularity, (len(mem), 1)))):
            s = _scaled(scores) + jitter
            s[block] = -np.inf
            target_score = s[np.arange(len(tgt)), tgt]
            ranks[name][sl] = (s > target_score[:, None]).sum(axis=1)
    out = {name: _hit_metrics(r, k) for name, r in ranks.items()}
    out["data"] = {"members": float(len(test)), "items": float(n_items), "train_rows": float(len(train))}
    return out


# ---------------------------------------------------------------------------------------------- edges
def read_edges(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise InteractionFileError(f"edge file {path} does not exist")
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    missing = [c for c in EDGE_COLUMNS if c not in df]
    if missing:
        raise InteractionFileError(f"edge file {path} lacks column(s) {missing}; has {list(df.columns)}")
    if df[EDGE_COLUMNS].isna().any().any():
        rows = np.flatnonzero(df[EDGE_COLUMNS].isna().any(axis=1).to_numpy())[:10].tolist()
        raise InteractionFileError(f"edge file {path}: empty member id in row(s) {rows}")
    return df


def encode_edges(df: pd.DataFrame) -> tuple[np.ndarray, pd.Index]:
    """Unique undirected integer pairs (self-loops dropped) and the member ids they index."""
    both = pd.concat([df["member_a"].astype(str), df["member_b"].astype(str)], ignore_index=True)
    codes, nodes = pd.factorize(both)
    a, b = codes[: len(df)], codes[len(df) :]
    keep = a != b
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    pairs = np.unique(np.stack([lo, hi], axis=1), axis=0)
    return pairs.astype(np.int64), pd.Index(nodes)


def adjacency(edges: np.ndarray, n: int) -> sp.csr_matrix:
    a = np.concatenate([edges[:, 0], edges[:, 1]])
    b = np.concatenate([edges[:, 1], edges[:, 0]])
    return sp.csr_matrix((np.ones(len(a)), (a, b)), shape=(n, n))


class AdamicAdar:
    """The baseline: sum over common neighbours z of 1 / log(degree(z))."""

    def fit(self, edges: np.ndarray, n_nodes: int) -> AdamicAdar:
        self.adj_ = adjacency(edges, n_nodes)
        deg = np.asarray(self.adj_.sum(axis=1)).ravel()
        self.weighted_ = (self.adj_ @ sp.diags(1.0 / np.log(np.maximum(deg, 2.0)))).tocsr()
        return self

    def score(self, nodes: np.ndarray) -> np.ndarray:
        return (self.weighted_[nodes] @ self.adj_).toarray()


def evaluate_edges(
    model: EdgeModel,
    df: pd.DataFrame,
    holdout: float = 0.1,
    k: int = 10,
    max_members: int | None = 2000,
    seed: int = 0,
    batch: int = 512,
) -> dict[str, dict[str, float]]:
    """``recall@k`` and ``ndcg@k`` on held-out edges, for the model and for Adamic-Adar."""
    if not 0.0 < holdout < 1.0:
        raise InteractionFileError(f"holdout must be in (0, 1), got {holdout}")
    pairs, nodes = encode_edges(df)
    n = len(nodes)
    if len(pairs) < 10:
        raise InteractionFileError(f"only {len(pairs)} distinct edges; need at least 10")
    rng = np.random.default_rng(seed)
    test_mask = rng.random(len(pairs)) < holdout
    train, test = pairs[~test_mask], pairs[test_mask]
    truth = adjacency(test, n)
    evaluated = np.flatnonzero(np.asarray(truth.sum(axis=1)).ravel() > 0)
    if max_members is not None and len(evaluated) > max_members:
        evaluated = np.sort(rng.choice(evaluated, max_members, replace=False))
    model.fit(train, n)
    baseline = AdamicAdar().fit(train, n)
    train_adj = adjacency(train, n)
    jitter = _tie_break(n, seed)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    sums = {"model": np.zeros(2), "adamic_adar": np.zeros(2)}
    for sl in _batches(len(evaluated), batch):
        nodes_b = evaluated[sl]
        rel = truth[nodes_b].toarray() > 0
        block = train_adj[nodes_b].toarray() > 0
        block[np.arange(len(nodes_b)), nodes_b] = True
        n_rel = rel.sum(axis=1)
        ideal = np.cumsum(discounts)[np.minimum(n_rel, k) - 1]
        for name, m in (("model", model), ("adamic_adar", baseline)):
            s = _scaled(m.score(nodes_b)) + jitter
            s[block] = -np.inf
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, axis=1), axis=1), axis=1)
            hits = np.take_along_axis(rel, top, axis=1)
            sums[name] += [(hits.sum(axis=1) / n_rel).sum(), ((hits * discounts).sum(axis=1) / ideal).sum()]
    m = max(len(evaluated), 1)
    out = {name: {f"recall@{k}": float(v[0] / m), f"ndcg@{k}": float(v[1] / m)} for name, v in sums.items()}
    out["data"] = {
        "members": float(len(evaluated)),
        "nodes": float(n),
        "train_edges": float(len(train)),
        "test_edges": float(len(test)),
    }
    return out
