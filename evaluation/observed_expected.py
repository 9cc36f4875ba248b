"""Calibration of logged predictions: observed over expected (O/E), overall and per slice.

O/E = sum of observed engagements / sum of predicted probabilities. It is 1 for a calibrated model;
above 1 the model under-predicts (more engagements happened than it expected), below 1 it over-predicts.
It is the ratio of sums, so every row weighs by its prediction, and a slice's O/E says by how much the
predictions of that slice would have to be scaled to match what happened.

**Interval.** The 95% interval comes from the delta method for a ratio estimator. Rows of one request
are not independent (one member, one session, one slate), so the variance is clustered by request
(``request_id``; without one, every row is its own cluster): with per-cluster sums ``O_c`` and ``E_c``,
``n`` clusters and ``r = ΣO / ΣE``,

    var(r) ≈ n / (n - 1) · Σ_c (O_c - r·E_c)² / (ΣE)²

and the interval is ``r·exp(±1.96·se/r)``, the same delta method on ``log r``: a ratio of sums is
skewed to the right when engagements are few, and on the log scale the interval stays positive. In a
slice, the clusters are the requests' rows that fall into it. The estimator treats the predictions as
fixed and the engagements as random; it is O(rows), with no resampling, and needs at least two
clusters (else NaN). With very few engagements in a slice (say under 10) the interval is too short;
read the ``observed`` count next to it. With none, the interval is ``[0, 3.69/ΣE]`` (the Poisson
upper bound for zero events).

**Reliability table.** The rows are cut into ``bins`` bins at the quantiles of the prediction (equal
numbers of rows, so every bin has data even when predictions are concentrated near 0; tied predictions
stay in one bin, so a bin may hold more rows and there may be fewer bins). Per bin: rows, mean
prediction, observed rate and its Wilson 95% interval (binomial, rows treated as independent, which is
adequate for a picture). The reliability diagram plots the observed rate against the mean prediction
with the diagonal (perfect calibration) and a histogram of the predictions underneath.

**Time.** ``day`` and ``hour`` slice by the UTC day or hour of the log's ``timestamp`` (epoch seconds)
when the log has no column of that name (:func:`with_time_buckets`): O/E drifting over time is what a
model trained once and served for days shows first, and a pooled ratio averages it away.

**Truth.** Where the log carries ``true_p`` (the simulator's ground-truth engagement probability) the
same ratios are reported against it (``o_over_e_true_p``): O/E without the noise of the clicks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from evaluation.command_output import json_number
from rankers.vectors import observed_over_expected
from simulator.logs import LogFormatError, binary_column, describe_rows, numeric_column

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Z95 = NormalDist().inv_cdf(0.975)


def probabilities(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A probability column as floats in [0, 1]; empty, non-numeric or out-of-range rows are an error."""
    p = numeric_column(frame, column)
    bad = (p < 0) | (p > 1)
    if bad.any():
        raise LogFormatError(f"column {column!r} must be a probability in [0, 1]; it is not in {describe_rows(bad)}")
    return p


def _codes(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes of a column, sorted by value, with nulls as a slice of their own (last)."""
    try:
        codes, uniques = pd.factorize(values, sort=True, use_na_sentinel=False)
    except TypeError:  # values that do not sort against each other: first-seen order
        codes, uniques = pd.factorize(values, sort=False, use_na_sentinel=False)
    return codes.astype(np.int64), pd.Index(uniques)


def slice_codes(
    frame: pd.DataFrame, columns: Sequence[str], cache: dict[str, tuple[np.ndarray, pd.Index]] | None = None
) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    """Each row's slice (the joint value of ``columns``) as a code ``0..S-1``, and each slice's values,
    in value order. ``cache`` keeps each column's codes between calls (several ``--by`` share columns)."""
    cache = {} if cache is None else cache
    parts = []
    for c in columns:
        if c not in cache:
            cache[c] = _codes(frame[c])
        parts.append(cache[c])
    if len(parts) == 1:
        codes, uniques = parts[0]
        return codes, [(v,) for v in uniques.tolist()]
    dims = tuple(max(len(u), 1) for _, u in parts)
    joint = np.ravel_multi_index(tuple(c for c, _ in parts), dims)
    if np.prod(dims, dtype=np.float64) <= max(4 * len(joint), 1 << 20):
        occupied = np.flatnonzero(np.bincount(joint, minlength=int(np.prod(dims))))
        lookup = np.zeros(int(np.prod(dims)), dtype=np.int64)
        lookup[occupied] = np.arange(len(occupied))
        codes, uniq = lookup[joint], occupied
    else:
        codes, uniq = pd.factorize(joint, sort=True)
    per_column = np.unravel_index(np.asarray(uniq), dims)
    values = list(zip(*(u[idx].tolist() for (_, u), idx in zip(parts, per_column, strict=True)), strict=True))
    return codes.astype(np.int64), values


def ratio_stats(
    observed: np.ndarray,
    expected: np.ndarray,
    slices: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
    n_slices: int | None = None,
) -> pd.DataFrame:
    """Per slice: rows, ΣO, ΣE, O/E and its clustered delta-method 95% interval (see the module docstring).

    ``slices`` and ``clusters`` are integer codes per row (``None``: one slice; every row a cluster).
    Vectorised with ``bincount``: 1M rows and thousands of slices take tens of milliseconds."""
    o = np.asarray(observed, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    s = np.zeros(len(o), dtype=np.int64) if slices is None else np.asarray(slices, dtype=np.int64)
    n_s = int(n_slices if n_slices is not None else (s.max() + 1 if len(s) else 1))
    if clusters is None:
        o_c, e_c, slice_of_c = o, e, s
    else:
        c = np.asarray(clusters, dtype=np.int64)
        n_cl = int(c.max()) + 1 if len(c) else 1
        key = s * n_cl + c
        if n_s * n_cl <= max(4 * len(key), 1 << 20):  # dense cells: bincount beats hashing
            occupied = np.flatnonzero(np.bincount(key, minlength=n_s * n_cl))
            o_c = np.bincount(key, o, minlength=n_s * n_cl)[occupied]
            e_c = np.bincount(key, e, minlength=n_s * n_cl)[occupied]
            slice_of_c = occupied // n_cl
        else:
            cell, keys = pd.factorize(key)
            o_c, e_c = np.bincount(cell, o), np.bincount(cell, e)
            slice_of_c = np.asarray(keys) // n_cl
    rows = np.bincount(s, minlength=n_s)
    n_c = np.bincount(slice_of_c, minlength=n_s)
    o_s = np.bincount(slice_of_c, o_c, minlength=n_s)
    e_s = np.bincount(slice_of_c, e_c, minlength=n_s)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(e_s > 0, o_s / e_s, np.nan)
        resid = np.bincount(slice_of_c, (o_c - r[slice_of_c] * e_c) ** 2, minlength=n_s)
        var = np.where(n_c > 1, n_c / (n_c - 1) * resid / e_s**2, np.nan)
        half = Z95 * np.sqrt(var) / r
        low, high = r * np.exp(-half), r * np.exp(half)
    zero = (o_s == 0) & (e_s > 0)  # the log scale collapses to [0, 0]: use the Poisson bound of 0 events
    low[zero], high[zero] = 0.0, -np.log(0.025) / e_s[zero]
    return pd.DataFrame(
        {"rows": rows, "observed": o_s, "expected": e_s, "o_over_e": r, "ci_low": low, "ci_high": high, "clusters": n_c}
    )


def wilson_interval(successes: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score 95% interval of a binomial proportion, vectorised (NaN where ``n`` is 0)."""
    k, n = np.asarray(successes, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        phat = k / n
        denom = 1 + Z95**2 / n
        centre = (phat + Z95**2 / (2 * n)) / denom
        half = Z95 / denom * np.sqrt(phat * (1 - phat) / n + Z95**2 / (4 * n**2))
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def reliability_table(y: np.ndarray, p: np.ndarray, bins: int = 10, truth: np.ndarray | None = None) -> pd.DataFrame:
    """Quantile bins of the prediction: rows, range, mean prediction, observed rate with its Wilson 95%
    interval, O/E, and the mean of ``truth`` where given."""
    if bins < 1:
        raise ValueError("--bins must be at least 1")
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    if not len(p):
        return pd.DataFrame(columns=["bin", "rows", "low", "high", "mean_predicted", "observed_rate"])
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    raw_bin = np.searchsorted(edges[1:-1], p, side="right")
    b, used = pd.factorize(raw_bin, sort=True)  # bins no row fell into (ties at an edge) disappear
    used = np.asarray(used)
    n = np.bincount(b)
    k = np.bincount(b, y)
    ci_low, ci_high = wilson_interval(k, n)
    table = pd.DataFrame(
        {
            "bin": np.arange(len(n)),
            "rows": n,
            "low": edges[used],
            "high": edges[np.minimum(used + 1, len(edges) - 1)],
            "mean_predicted": np.bincount(b, p) / n,
            "observed_rate": k / n,
            "ci_low": ci_low,
            "ci_high": ci_high,
        }
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        table["o_over_e"] = np.where(table["mean_predicted"] > 0, k / np.bincount(b, p), np.nan)
    if truth is not None:
        table["mean_true_p"] = np.bincount(b, np.asarray(truth, dtype=np.float64)) / n
    return table


@dataclass
class OEResult:
    """Everything ``feedrank eval oe`` reports: the overall ratio, one table per ``--by`` and the
    reliability table. ``to_json`` is what ``--json`` prints."""

    label: str
    predicted: str
    cluster: str | None
    overall: pd.Series
    reliability: pd.DataFrame
    by: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return int(self.overall["rows"])

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "predicted": self.predicted,
            "cluster": self.cluster,
            "rows": self.rows,
            "overall": _stats(self.overall.to_dict()),
            "by": {
                key: [{"value": _value(r["value"]), **_stats(r)} for r in t.to_dict("records")]
                for key, t in self.by.items()
            },
            "reliability": [
                {
                    "bin": int(r["bin"]),
                    "rows": int(r["rows"]),
                    "range": [json_number(r["low"]), json_number(r["high"])],
                    "mean_predicted": json_number(r["mean_predicted"]),
                    "observed_rate": json_number(r["observed_rate"]),
                    "ci95": [json_number(r["ci_low"]), json_number(r["ci_high"])],
                    "o_over_e": json_number(r["o_over_e"]),
                    **({"mean_true_p": json_number(r["mean_true_p"])} if "mean_true_p" in r else {}),
                }
                for r in self.reliability.to_dict("records")
            ],
        }


def _stats(row: dict[str, Any]) -> dict[str, Any]:
    out = {
        "rows": int(row["rows"]),
        "observed": json_number(row["observed"]),
        "expected": json_number(row["expected"]),
        "o_over_e": json_number(row["o_over_e"]),
        "ci95": [json_number(row["ci_low"]), json_number(row["ci_high"])],
        "clusters": int(row["clusters"]),
    }
    if "o_over_e_true_p" in row:
        out["o_over_e_true_p"] = json_number(row["o_over_e_true_p"])
    return out


def _value(v: Any) -> Any:
    """A slice value for JSON: a scalar for one column, a list for a joint slice; nulls as null."""
    if isinstance(v, tuple):
        return [_value(x) for x in v] if len(v) > 1 else _value(v[0])
    if v is None or v is pd.NaT or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return None
    v = v.item() if isinstance(v, np.generic) else v
    return v if isinstance(v, str | int | float | bool) else str(v)  # e.g. a timestamp


# ``--by`` names derived from ``timestamp`` when the log has no such column: pandas' offset aliases.
TIME_BUCKETS: dict[str, str] = {"day": "D", "hour": "h"}
TIME_FORMATS: dict[str, str] = {"day": "%Y-%m-%d", "hour": "%Y-%m-%d %H:00"}


def with_time_buckets(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """``frame`` with a column per name in ``names`` (keys of :data:`TIME_BUCKETS`): the UTC day or hour
    of its ``timestamp``, as ISO text, which sorts in time order. Raises :class:`LogFormatError` naming the
    rows whose timestamp is empty or not a number."""
    if not names:
        return frame
    if "timestamp" not in frame:
        raise LogFormatError(f"--by {names[0]} needs a 'timestamp' column; the log has {list(frame.columns)}")
    at = pd.to_datetime(numeric_column(frame, "timestamp"), unit="s", utc=True)
    return frame.assign(**{n: at.floor(TIME_BUCKETS[n]).strftime(TIME_FORMATS[n]) for n in names})


def evaluate_oe(
    frame: pd.DataFrame,
    label: str = "clicked",
    predicted: str = "predicted",
    by: Sequence[Sequence[str]] = (),
    bins: int = 10,
    cluster: str | None = "request_id",
) -> OEResult:
    """O/E of ``predicted`` against ``label`` overall, per slice of each entry of ``by`` (one column or
    several, jointly) and per quantile bin of the prediction. Clustered by ``cluster`` when the frame
    has that column. Raises :class:`LogFormatError` naming the rows on bad values."""
    if not len(frame):
        raise LogFormatError("the log has no rows")
    y = binary_column(frame, label)
    p = probabilities(frame, predicted)
    for cols in by:
        missing = [c for c in cols if c not in frame]
        if missing:
            raise LogFormatError(f"--by column(s) {missing} not in the log; it has {list(frame.columns)}")
    truth = None
    if "true_p" in frame and predicted != "true_p":
        t = pd.to_numeric(frame["true_p"], errors="coerce").to_numpy(dtype=np.float64)
        truth = t if len(t) and np.isfinite(t).all() else None
    clusters = None
    cluster_used = cluster if cluster and cluster in frame else None
    if cluster_used:
        clusters = pd.factorize(frame[cluster_used], use_na_sentinel=False)[0].astype(np.int64)

    def table(slices: np.ndarray | None, n_slices: int) -> pd.DataFrame:
        t = ratio_stats(y, p, slices, clusters, n_slices)
        if truth is not None:
            s = np.zeros(len(y), dtype=np.int64) if slices is None else slices
            with np.errstate(divide="ignore", invalid="ignore"):
                t["o_over_e_true_p"] = np.bincount(s, truth, minlength=n_slices) / t["expected"].to_numpy()
        return t

    overall = table(None, 1).iloc[0].copy()
    overall["o_over_e"] = observed_over_expected(y, p)  # the project's one definition of the point estimate
    if truth is not None:
        overall["o_over_e_true_p"] = observed_over_expected(truth, p)
    result = OEResult(label, predicted, cluster_used, overall, reliability_table(y, p, bins, truth))
    cache: dict[str, tuple[np.ndarray, pd.Index]] = {}
    for cols in by:
        codes, values = slice_codes(frame, cols, cache)
        t = table(codes, len(values))
        t.insert(0, "value", pd.Series(values, dtype=object))
        result.by[",".join(cols)] = t
    return result


def reliability_figure(table: pd.DataFrame, p: np.ndarray | None = None, title: str = "") -> Figure:
    """Observed rate vs mean prediction per bin with Wilson intervals and the diagonal; underneath, a
    histogram of the predictions (``p``; the bins' row counts when not given)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 6.4))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.08})
    x, obs = table["mean_predicted"].to_numpy(), table["observed_rate"].to_numpy()
    tops = [table["mean_predicted"], table["ci_high"], *([table["mean_true_p"]] if "mean_true_p" in table else [])]
    hi = min(1.0, float(np.nanmax(np.concatenate([np.asarray(t, dtype=np.float64) for t in tops] + [[1e-9]]))) * 1.15)
    top.plot([0, hi], [0, hi], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    err = np.vstack([obs - table["ci_low"].to_numpy(), table["ci_high"].to_numpy() - obs])
    top.errorbar(x, obs, yerr=err, fmt="o-", capsize=3, label="observed rate (95% Wilson)")
    if "mean_true_p" in table:
        top.plot(x, table["mean_true_p"], "s:", markersize=4, label="mean true_p")
    top.set_xlim(0, hi)
    top.set_ylim(0, hi)
    top.set_ylabel("observed rate")
    top.set_title(title or "Reliability diagram")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    if p is not None and len(p):
        bottom.hist(p, bins=50, range=(0, hi), color="tab:blue", alpha=0.6)
    else:
        bottom.bar(x, table["rows"], width=hi / 50)
    bottom.set_xlabel("predicted probability (bin mean)")
    bottom.set_ylabel("rows")
    bottom.grid(alpha=0.3)
    return fig


def slice_figure(table: pd.DataFrame, column: str, limit: int = 30) -> Figure:
    """O/E per slice with its 95% interval and a line at 1 (the ``limit`` largest slices); points, not
    bars, so the axis can zoom in on the differences around 1."""
    from matplotlib.figure import Figure

    t = largest_slices(table, limit)
    names = [f"{slice_label(v)} ({n:,})" for v, n in zip(t["value"], t["rows"], strict=True)]
    fig = Figure(figsize=(6.4, 1.6 + 0.32 * len(t)), layout="constrained")
    ax = fig.subplots()
    r = t["o_over_e"].to_numpy()
    low = np.nan_to_num(r - t["ci_low"].to_numpy(), nan=0.0)
    high = np.nan_to_num(t["ci_high"].to_numpy() - r, nan=0.0)
    ypos = np.arange(len(t))[::-1]
    ax.errorbar(r, ypos, xerr=np.vstack([low, high]), fmt="o", capsize=3, label="O/E (95% interval)")
    if "o_over_e_true_p" in t:
        ax.plot(t["o_over_e_true_p"], ypos, "D", color="tab:orange", markersize=4, label="O/E vs true_p")
    ax.axvline(1.0, color="red", linewidth=1, label="calibrated (1)")
    fig.legend(loc="outside lower center", ncol=3, fontsize=8)
    ax.set_yticks(ypos, names)
    ax.set_ylim(-0.7, len(t) - 0.3)
    ax.set_xlabel("O/E (>1: under-predicts), 95% interval; slices with their rows")
    ax.set_title(f"O/E by {column}")
    ax.grid(axis="x", alpha=0.3)
    return fig


def largest_slices(table: pd.DataFrame, limit: int) -> pd.DataFrame:
    """The ``limit`` slices with the most rows, in the table's (value) order."""
    if len(table) <= limit:
        return table
    keep = np.sort(np.argsort(-table["rows"].to_numpy(), kind="stable")[:limit])
    return table.iloc[keep]


def slice_label(v: Any) -> str:
    """A slice value as text: ``jobs``, or ``jobs, 3`` for a joint slice; ``null`` and ``(empty)``."""

    def text(x: Any) -> str:
        return "null" if x is None else "(empty)" if x == "" else str(x)

    value = _value(v)
    return ", ".join(map(text, value)) if isinstance(value, list) else text(value)
