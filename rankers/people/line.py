"""LINE graph embeddings (Tang et al. 2015): first- and second-order proximity, in torch.

First order: connected members get similar vectors (``sigma(u_i . u_j)`` high on edges). Second order:
members with shared neighbours get similar vertex vectors, because each vertex vector must predict the
same *context* vectors. Both are trained with negative sampling (noise ~ degree^0.75) on uniformly
sampled edges, which is what lets LINE scale to graphs with millions of edges. Single-threaded and
seeded, so a retrain on the same graph gives the same embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rankers.training import Progress
from rankers.vectors import unit_rows


@dataclass
class LineEmbeddings:
    """Raw vectors (zero rows for isolated nodes): ``first`` u_i, ``second`` vertex u_i, ``context`` u'_i.

    Cosine similarity of ``unit(first)`` rows is first-order proximity, of ``unit(second)`` rows
    second-order (shared neighbourhoods); ``second @ context.T`` is the model's own edge score.
    """

    first: np.ndarray
    second: np.ndarray
    context: np.ndarray
    losses: list[float]


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as float32; zero rows stay zero (no similarity to anything)."""
    return unit_rows(x, np.float32)


def train_line(
    edges: np.ndarray,
    n_nodes: int,
    dim: int = 32,
    epochs: int = 30,
    negatives: int = 5,
    lr: float = 0.02,
    batch_size: int = 1024,
    seed: int = 7,
    progress: Progress | None = None,
    **_: Any,
) -> LineEmbeddings:
    """Fit both orders on undirected ``edges`` ((E, 2) ints in [0, n_nodes)); each is ``dim`` wide."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    edges = edges[edges[:, 0] != edges[:, 1]]
    if len(edges) == 0 or n_nodes == 0:
        zeros = np.zeros((n_nodes, dim), dtype=np.float32)
        return LineEmbeddings(zeros, zeros.copy(), zeros.copy(), [])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(edges, n_nodes, dim, epochs, negatives, lr, batch_size, seed, progress)
    finally:
        torch.set_num_threads(threads)


def _fit(
    edges: np.ndarray,
    n_nodes: int,
    dim: int,
    epochs: int,
    negatives: int,
    lr: float,
    batch_size: int,
    seed: int,
    progress: Progress | None,
) -> LineEmbeddings:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    # Both directions: the graph is undirected, and second order is asymmetric (vertex vs context).
    src = torch.from_numpy(np.concatenate([edges[:, 0], edges[:, 1]]))
    dst = torch.from_numpy(np.concatenate([edges[:, 1], edges[:, 0]]))
    degree = torch.bincount(src, minlength=n_nodes).double()
    noise = degree.pow(0.75)
    noise = noise / noise.sum()

    def table(init: bool) -> nn.Embedding:
        emb = nn.Embedding(n_nodes, dim, sparse=True)
        with torch.no_grad():
            if init:
                emb.weight.uniform_(-0.5 / dim, 0.5 / dim, generator=gen)
            else:
                emb.weight.zero_()
        return emb

    first, second, context = table(True), table(True), table(False)
    opt = torch.optim.SparseAdam([first.weight, second.weight, context.weight], lr=lr)
    logsig = nn.functional.logsigmoid
    task = progress.add_task("LINE embeddings", total=epochs) if progress is not None else None
    losses: list[float] = []
    n = len(src)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            s, d = src[idx], dst[idx]
            neg = torch.multinomial(noise, len(idx) * negatives, replacement=True, generator=gen).view(len(idx), -1)
            u1, v1, n1 = first(s), first(d), first(neg)
            loss1 = -logsig((u1 * v1).sum(-1)) - logsig(-torch.bmm(n1, u1.unsqueeze(-1)).squeeze(-1)).sum(-1)
            u2, c2, n2 = second(s), context(d), context(neg)
            loss2 = -logsig((u2 * c2).sum(-1)) - logsig(-torch.bmm(n2, u2.unsqueeze(-1)).squeeze(-1)).sum(-1)
            loss = (loss1 + loss2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / n)
        if progress is not None:
            progress.update(task, advance=1, description=f"LINE epoch {epoch + 1}/{epochs} loss {losses[-1]:.3f}")
    isolated = (degree == 0).numpy()
    out = []
    for emb in (first, second, context):
        w = emb.weight.detach().numpy().copy()
        w[isolated] = 0.0  # never trained: random noise would read as similarity
        out.append(w)
    return LineEmbeddings(out[0], out[1], out[2], losses)


def nearest(emb: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """(n, k) rows of each row's k most cosine-similar other rows (best first; -1 where fewer exist)."""
    n = len(emb)
    k = min(k, max(n - 1, 0))
    out = np.full((n, k), -1, dtype=np.int32)
    if k == 0:
        return out
    has = np.linalg.norm(emb, axis=1) > 0
    for lo in range(0, n, block):
        sims = emb[lo : lo + block] @ emb.T
        sims[:, ~has] = -np.inf
        rows = np.arange(lo, min(n, lo + block))
        sims[rows - lo, rows] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1), axis=1)
        ok = np.isfinite(np.take_along_axis(sims, top, axis=1)) & has[rows, None]
        out[lo : lo + len(rows)] = np.where(ok, top, -1)
    return out
