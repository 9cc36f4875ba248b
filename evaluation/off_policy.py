"""Off-policy estimators: what a new policy's click rate per logged slot would have been, from logs of
another (the logging) policy.

Every estimator here is a ratio of sums over logged rows, ``sum(numerator) / sum(denominator)``:

=========  =================================  ===================
estimator  numerator per row                  denominator per row
=========  =================================  ===================
logged     clicked                            1
replay     clicked * matched                  matched
ips        clicked * w                        1
snips      clicked * w                        w
dr         direct + w * (clicked - r_logged)  1
=========  =================================  ===================

with ``w = probability / propensity`` (the evaluated policy's probability of the logged item at the
logged position over the logging policy's), ``matched`` whether that probability is 1, ``r_logged`` a
reward model's prediction for the logged item and ``direct`` the model's expected reward of the
evaluated policy's choice for the slot (the sum over the items it may put there of probability x
prediction). The estimand is the expected clicks per logged slot had the evaluated policy filled it.

Writing them that way lets one bootstrap pass give every interval: rows of one request are correlated
(same member, same moment, items drawn without replacement), so the bootstrap resamples requests, which
only needs per-request sums of each column and, per replicate, a matrix product with resampling counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evaluation.command_output import json_number

MATCH_TOLERANCE = 1e-9  # a probability within this of 1 counts as "the policy shows this item here"
DEFAULT_BOOTSTRAP = 200
JSON_ORDER = ["replay", "ips", "snips", "dr", "logged"]
_CHUNK_ENTRIES = 1 << 19  # resampling counts per chunk: small enough to stay in cache (measured fastest)


# ---------------------------------------------------------------------------------------------- terms
def importance_weights(probability: np.ndarray, propensity: np.ndarray) -> np.ndarray:
    """``probability / propensity``; propensities are validated to lie in (0, 1] before this."""
    return np.asarray(probability, dtype=np.float64) / np.asarray(propensity, dtype=np.float64)


def matched_rows(probability: np.ndarray) -> np.ndarray:
    """Rows the evaluated policy would have shown exactly as logged (deterministic policies)."""
    return np.asarray(probability, dtype=np.float64) >= 1.0 - MATCH_TOLERANCE


def ratio_terms(
    clicked: np.ndarray,
    weights: np.ndarray,
    matched: np.ndarray,
    reward_logged: np.ndarray | None = None,
    direct: np.ndarray | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Per-row (numerator, denominator) of each estimator (see the module's table); a ``None``
    denominator is one per row. ``dr`` is included when both ``reward_logged`` and ``direct`` are given."""
    c = np.asarray(clicked, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    m = np.asarray(matched, dtype=np.float64)
    cw = c * w
    terms: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
        "logged": (c, None),
        "replay": (c * m, m),
        "ips": (cw, None),
        "snips": (cw, w),
    }
    if reward_logged is not None and direct is not None:
        terms["dr"] = (np.asarray(direct, dtype=np.float64) + w * (c - np.asarray(reward_logged, np.float64)), None)
    return terms


def _ratio(numerator: np.ndarray, denominator: np.ndarray | None) -> float:
    den = float(len(numerator)) if denominator is None else float(np.sum(denominator))
    return float(np.sum(numerator)) / den if den > 0 else float("nan")


# ---------------------------------------------------------------------------------------------- diagnostics
def effective_sample_size(weights: np.ndarray) -> float:
    """``(sum w)^2 / sum w^2``: how many logged rows the weighted estimate is worth (Kish)."""
    w = np.asarray(weights, dtype=np.float64)
    sq = float(np.dot(w, w))
    return float(w.sum()) ** 2 / sq if sq > 0 else 0.0


# ---------------------------------------------------------------------------------------------- bootstrap
def cluster_sums(clusters: np.ndarray, columns: Sequence[np.ndarray | None], n_clusters: int) -> np.ndarray:
    """(n_clusters, k) sums of each column per cluster code; a ``None`` column stands for ones (a count)."""
    clusters = np.asarray(clusters, dtype=np.intp)
    out = np.empty((n_clusters, len(columns)))
    for j, col in enumerate(columns):  # k columns, a handful: one bincount each over the rows
        out[:, j] = np.bincount(clusters, weights=col, minlength=n_clusters)
    return out


def bootstrap_totals(sums: np.ndarray, n_boot: int, seed: int | None = 0) -> np.ndarray:
    """(n_boot, k) column totals over requests resampled with replacement (a multinomial draw per replicate).

    Each chunk of replicates draws indices, counts them per cluster and takes a matrix product with the
    per-cluster sums, so the cost is O(n_boot x clusters) with no Python loop over either."""
    n, k = sums.shape
    out = np.empty((n_boot, k))
    if n == 0 or n_boot == 0:
        out[:] = 0.0
        return out
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ENTRIES // n)
    for lo in range(0, n_boot, chunk):
        b = min(chunk, n_boot - lo)
        draws = rng.integers(0, n, size=(b, n))
        draws += (np.arange(b) * n)[:, None]
        counts = np.bincount(draws.ravel(), minlength=b * n).reshape(b, n)
        out[lo : lo + b] = counts.astype(np.float64) @ sums
    return out


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> np.ndarray:
    """(k, 2) percentile intervals of (n_boot, k) replicates, ignoring undefined (NaN) replicates."""
    reps = np.asarray(replicates, dtype=np.float64)
    out = np.full((reps.shape[1], 2), np.nan)
    alpha = (1.0 - level) / 2
    for j in range(reps.shape[1]):  # k columns, a handful: the estimators, not the rows
        col = reps[:, j][np.isfinite(reps[:, j])]
        if len(col):
            out[j] = np.quantile(col, [alpha, 1.0 - alpha])
    return out


def cluster_bootstrap(
    clusters: np.ndarray,
    numerators: Sequence[np.ndarray],
    denominators: Sequence[np.ndarray | None],
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int | None = 0,
    level: float = 0.95,
) -> np.ndarray:
    """(k, 2) bootstrap intervals of k ratio estimators ``sum(num_j) / sum(den_j)``, resampling clusters.

    ``numerators`` and ``denominators``: k row arrays each (a ``None`` denominator: one per row);
    ``clusters``: the rows' cluster codes 0..n-1."""
    clusters = np.asarray(clusters, dtype=np.intp)
    k = len(numerators)
    n = int(clusters.max()) + 1 if len(clusters) else 0
    totals = bootstrap_totals(cluster_sums(clusters, [*numerators, *denominators], n), n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(totals[:, k:] > 0, totals[:, :k] / totals[:, k:], np.nan)
    return percentile_interval(ratios, level)


# ---------------------------------------------------------------------------------------------- all at once
@dataclass(frozen=True)
class Estimate:
    value: float
    ci95: tuple[float, float]

    def to_json(self) -> dict[str, Any]:
        return {"value": json_number(self.value), "ci95": [json_number(self.ci95[0]), json_number(self.ci95[1])]}


@dataclass(frozen=True)
class OffPolicyResult:
    """Every estimate with its interval, and what a reader needs to judge them."""

    estimates: dict[str, Estimate]  # logged, replay, ips, snips[, dr], in that order
    matched: int
    rows: int
    requests: int
    ess: float
    max_weight: float
    bootstrap: int
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The command's JSON: one object per estimator (replay also has ``matched``), then diagnostics."""
        out: dict[str, Any] = {}
        for name in sorted(self.estimates, key=JSON_ORDER.index):
            out[name] = self.estimates[name].to_json()
            if name == "replay":
                out[name]["matched"] = self.matched
        out.update(
            ess=json_number(self.ess),
            max_weight=json_number(self.max_weight),
            rows=self.rows,
            requests=self.requests,
            bootstrap=self.bootstrap,
            notes=list(self.notes),
        )
        return out


def evaluate(
    clicked: np.ndarray,
    propensity: np.ndarray,
    probability: np.ndarray,
    clusters: np.ndarray,
    reward_logged: np.ndarray | None = None,
    direct: np.ndarray | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int | None = 0,
) -> OffPolicyResult:
    """All estimators on logged rows, with request-clustered bootstrap intervals from one resampling pass.

    ``probability``: the evaluated policy's probability of each row's logged item at its logged position;
    ``clusters``: each row's request code (0..n_requests-1); ``reward_logged`` and ``direct`` (see
    :func:`ratio_terms`) add the doubly robust estimate."""
    clusters = np.asarray(clusters, dtype=np.intp)
    n_requests = int(clusters.max()) + 1 if len(clusters) else 0
    weights = importance_weights(probability, propensity)
    matched = matched_rows(probability)
    terms = ratio_terms(clicked, weights, matched, reward_logged, direct)
    names = list(terms)
    num = [terms[n][0] for n in names]
    den = [terms[n][1] for n in names]
    values = [_ratio(a, b) for a, b in zip(num, den, strict=True)]
    if n_requests and n_boot > 0:
        intervals = cluster_bootstrap(clusters, num, den, n_boot, seed)
    else:
        intervals = np.full((len(names), 2), np.nan)
    n_matched = int(matched.sum())
    notes = []
    if n_matched == 0:
        notes.append(
            "replay: no logged row shows the item the policy shows there with probability 1, so replay is "
            "undefined (it needs a deterministic policy that agrees with some logged slots)"
        )
    partial = int(((weights > 0) & ~matched).sum())
    if partial:
        notes.append(
            f"replay ignores {partial} logged row(s) where the policy shows the logged item with a probability "
            "strictly between 0 and 1; IPS, SNIPS and DR use them"
        )
    estimates = {
        n: Estimate(v, (float(lo), float(hi))) for n, v, (lo, hi) in zip(names, values, intervals, strict=True)
    }
    return OffPolicyResult(
        estimates=estimates,
        matched=n_matched,
        rows=len(clusters),
        requests=n_requests,
        ess=effective_sample_size(weights),
        max_weight=float(weights.max()) if len(weights) else float("nan"),
        bootstrap=n_boot,
        notes=notes,
    )
