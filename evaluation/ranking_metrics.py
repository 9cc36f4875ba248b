"""Ranking metrics of logged scores, per group (a feed request): AUC, NDCG@k, MAP@k, HR@k.

Each group (by default a ``request_id``) is ranked by its score, highest first, and the labels say what
the member engaged with. The conventions:

- **AUC** is pooled over all rows (scikit-learn's ``roc_auc_score`` of ``label > 0`` against the score;
  tied scores count one half). Pooled AUC also rewards telling requests apart (a member who clicks a
  lot), so **gAUC** is reported too: the unweighted mean of each group's own AUC over the groups with
  both a relevant and a non-relevant row (``groups_with_both_classes``); ties count one half there too.
- **NDCG@k** is scikit-learn's ``ndcg_score``: the gain of a row is its label (graded labels are used as
  they are; linear gain, not ``2^label - 1``), the discount at 1-based rank ``i`` is ``1 / log2(i + 1)``,
  and DCG@k is divided by the group's ideal DCG@k (labels sorted best first). Rows with tied scores
  share the average of their gains, as ``ndcg_score`` does by default: the expected DCG over the orders
  of the tie, so a constant score is no better than a random one.
- **MAP@k** is the mean over groups of ``AP@k = (1 / min(k, R)) · Σ_{i≤k} P@i · rel_i``, with binary
  relevance ``rel = label > 0``, ``R`` the group's number of relevant rows and ``P@i`` the share of
  relevant rows among the first ``i``.
- **HR@k** (hit rate) is the share of groups with at least one relevant row in the first ``k``.
- MAP@k and HR@k break ties pessimistically: among rows with equal scores, the non-relevant come first.
  So a constant or coarse score cannot gain from the order the rows happen to be logged in (a log sorted
  by position would otherwise look like a good ranking).
- Groups without any relevant row have no ideal ranking; NDCG, MAP and HR are averaged over the groups
  with one (``groups_with_positive``); the others are counted as ``groups_without_positive``. A ``k``
  larger than a group just covers the whole group.

Everything is vectorised over groups: one factorisation of the group column, two sorts (by score and by
label) and ``bincount`` sums; no Python loop over groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from evaluation.command_output import json_number
from simulator.logs import LogFormatError, describe_rows, numeric_column

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class RankedGroups:
    """Rows sorted by group, then score (highest first), then label (lowest first: pessimistic ties)."""

    group: np.ndarray  # group code 0..G-1 of each sorted row
    score: np.ndarray
    label: np.ndarray
    rank: np.ndarray  # 0-based rank inside the group
    ideal_label: np.ndarray  # labels of each group sorted best first (same group layout as ``group``)
    n_groups: int

    @property
    def relevant(self) -> np.ndarray:
        """Relevant rows per group (``label > 0``)."""
        return np.bincount(self.group, self.label > 0, minlength=self.n_groups)

    @property
    def size(self) -> np.ndarray:
        return np.bincount(self.group, minlength=self.n_groups)


def rank_groups(groups: np.ndarray | pd.Series, scores: np.ndarray, labels: np.ndarray) -> RankedGroups:
    """Sort once; every metric below reads the result."""
    codes, uniques = pd.factorize(groups)
    if (codes < 0).any():
        raise ValueError(f"group is empty in {describe_rows(codes < 0)}")
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    order = np.lexsort((y, -s, codes))
    g = codes[order].astype(np.int64)
    n_groups = len(uniques)
    start = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(np.bincount(g, minlength=n_groups), out=start[1:])
    rank = np.arange(len(g)) - start[g]
    ideal = y[np.lexsort((-y, codes))]
    return RankedGroups(g, s[order], y[order], rank, ideal, n_groups)


def _discount(rank: np.ndarray, k: int) -> np.ndarray:
    return np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)


def ndcg_at_k(r: RankedGroups, k: int) -> np.ndarray:
    """Per group NDCG@k with tie-averaged gains (scikit-learn's ``ndcg_score``); NaN without a positive."""
    n = len(r.group)
    new_block = np.ones(n, dtype=bool)
    new_block[1:] = (r.group[1:] != r.group[:-1]) | (r.score[1:] != r.score[:-1])
    block = np.cumsum(new_block) - 1
    mean_gain = np.bincount(block, r.label) / np.bincount(block)
    dcg = np.bincount(r.group, mean_gain[block] * _discount(r.rank, k), minlength=r.n_groups)
    idcg = np.bincount(r.group, r.ideal_label * _discount(r.rank, k), minlength=r.n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(idcg > 0, dcg / idcg, np.nan)


def average_precision_at_k(r: RankedGroups, k: int) -> np.ndarray:
    """Per group AP@k (binary relevance, pessimistic ties); NaN without a relevant row."""
    rel = (r.label > 0).astype(np.float64)
    cum = np.cumsum(rel)
    before = np.zeros(r.n_groups)
    first = r.rank == 0
    before[r.group[first]] = cum[first] - rel[first]
    precision = (cum - before[r.group]) / (r.rank + 1)
    hits = np.bincount(r.group, rel * precision * (r.rank < k), minlength=r.n_groups)
    relevant = r.relevant
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(relevant > 0, hits / np.minimum(k, relevant), np.nan)


def hit_at_k(r: RankedGroups, k: int) -> np.ndarray:
    """Per group 1.0 if a relevant row is in the first ``k`` (pessimistic ties); NaN without one."""
    hits = np.bincount(r.group, (r.label > 0) & (r.rank < k), minlength=r.n_groups)
    return np.where(r.relevant > 0, (hits > 0).astype(np.float64), np.nan)


def group_auc(r: RankedGroups) -> np.ndarray:
    """Per group AUC (Mann-Whitney with mid-ranks for ties); NaN unless the group has both classes."""
    n = len(r.group)
    new_block = np.ones(n, dtype=bool)
    new_block[1:] = (r.group[1:] != r.group[:-1]) | (r.score[1:] != r.score[:-1])
    block = np.cumsum(new_block) - 1
    block_size = np.bincount(block)
    block_first_rank = r.rank[new_block]
    mid_desc = block_first_rank[block] + (block_size[block] + 1) / 2.0  # 1-based, 1 = highest score
    size = r.size
    ascending = size[r.group] + 1 - mid_desc
    pos = r.label > 0
    n_pos = np.bincount(r.group, pos, minlength=r.n_groups)
    n_neg = size - n_pos
    rank_sum = np.bincount(r.group, ascending * pos, minlength=r.n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def pooled_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """scikit-learn's ``roc_auc_score`` of ``label > 0``; NaN with a single class."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels) > 0
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64)))


def _mean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if len(finite) else float("nan")


@dataclass
class RankingResult:
    """What ``feedrank eval ranking`` reports; ``to_json`` is what ``--json`` prints."""

    label: str
    score: str
    group: str
    rows: int
    groups: int
    groups_with_positive: int
    groups_with_both_classes: int
    ks: list[int]
    metrics: dict[str, float]
    rate_by_rank: np.ndarray  # share of relevant rows at each 0-based score rank < max(ks)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": self.score,
            "group": self.group,
            "rows": self.rows,
            "groups": self.groups,
            "groups_with_positive": self.groups_with_positive,
            "groups_without_positive": self.groups - self.groups_with_positive,
            "groups_with_both_classes": self.groups_with_both_classes,
            "k": self.ks,
            "metrics": {key: json_number(v) for key, v in self.metrics.items()},
        }


def evaluate_ranking(
    frame: pd.DataFrame,
    score: str = "predicted",
    label: str = "clicked",
    group: str = "request_id",
    ks: Sequence[int] = (5, 10),
) -> RankingResult:
    """AUC, gAUC, NDCG@k, MAP@k and HR@k of ``score`` against ``label`` per ``group`` (module docstring)."""
    if not len(frame):
        raise LogFormatError("the log has no rows")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError("--k must be at least 1")
    s = numeric_column(frame, score)
    y = numeric_column(frame, label, non_negative=True)
    empty = frame[group].isna().to_numpy()
    if empty.any():
        raise LogFormatError(f"column {group!r} is empty in {describe_rows(empty)}")
    r = rank_groups(frame[group], s, y)
    metrics = {"auc": pooled_auc(s, y), "gauc": _mean(group_auc(r))}
    for k in ks:
        metrics[f"ndcg@{k}"] = _mean(ndcg_at_k(r, k))
        metrics[f"map@{k}"] = _mean(average_precision_at_k(r, k))
        metrics[f"hr@{k}"] = _mean(hit_at_k(r, k))
    top = r.rank < ks[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.bincount(r.rank[top], r.label[top] > 0, minlength=ks[-1]) / np.bincount(r.rank[top], minlength=ks[-1])
    relevant = r.relevant
    return RankingResult(
        label=label,
        score=score,
        group=group,
        rows=len(frame),
        groups=r.n_groups,
        groups_with_positive=int((relevant > 0).sum()),
        groups_with_both_classes=int(((relevant > 0) & (relevant < r.size)).sum()),
        ks=ks,
        metrics=metrics,
        rate_by_rank=rate,
    )


def metrics_figure(result: RankingResult) -> Figure:
    """NDCG, MAP and HR at each k; beside it, the share of relevant rows at each rank of the score."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    width = 0.8 / 3
    x = np.arange(len(result.ks))
    for i, name in enumerate(["ndcg", "map", "hr"]):
        values = [result.metrics[f"{name}@{k}"] for k in result.ks]
        bars = left.bar(x + (i - 1) * width, values, width, label=name.upper())
        left.bar_label(bars, fmt="%.2f", fontsize=7 if len(result.ks) <= 3 else 6)
    for name, title, style in (("auc", "AUC", "--"), ("gauc", "gAUC", ":")):
        if np.isfinite(result.metrics[name]):
            left.axhline(result.metrics[name], linestyle=style, color="grey", label=f"{title} (no k)")
    left.set_xticks(x, [f"k={k}" for k in result.ks])
    left.set_ylim(0, 1.1)
    left.set_title(f"Ranking by {result.score} (per {result.group})")
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=5)
    right.plot(np.arange(1, len(result.rate_by_rank) + 1), result.rate_by_rank, "o-")
    right.set_xlabel(f"rank by {result.score} (1 = highest)")
    right.set_ylabel(f"share with {result.label} > 0")
    right.set_title("Relevant rows by rank")
    right.set_ylim(bottom=0)
    right.grid(alpha=0.3)
    return fig
