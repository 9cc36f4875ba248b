"""The second-pass ranker: a logistic regression over the feature families, the FPR's score and source.

``design_matrix`` is the single place raw features become model inputs, so training and serving
cannot drift apart. Input columns (a DataFrame, one row per candidate):

- the derived stream features (``features.families.derive``): X_i, X_t, X_ij, X_ik, X_ijk, X_io;
- ``item_type``; ``item_age_s`` (NaN when unknown, e.g. a member card): X_t's creation time;
- ``source`` and ``fpr_score``: which FPR proposed the item and its calibrated score. Each source
  gets its own intercept and its own weight on its score's log-odds, so an FPR whose scores run hot
  is calibrated away, and a new FPR needs no code (its columns are learned from the data it appears in);
- ``fpr_model_age_s``: how long ago items became new to the FPR's model (NaN: unknown, or never: a
  model without parameters per item, ``rankers.fpr.new_items_after``). An item
  created since (``item_age_s`` below it) is new to the model, and each source gets its own intercept
  for those: an FPR that never saw an item scores it differently from the ones it learned on, and
  the share of such items grows for as long as a model serves;
- ``position`` (0 when absent): where the item was shown, as ``log(1 + position)`` per item type.
  Logged traffic is position-biased; fitting the bias separately lets serving rank by the
  probability at the top of the feed and report the probability at the position each item ends at;
- ``logged_by`` (optional): which policy logged the row; rows without it are the serving policy's.
  Each other policy gets its own intercept and position term per item type (``policy_columns``): a
  policy that ranks by what the features do not show puts the items that click anyway at the top,
  and its examination curve looks steeper than the serving policy's. Shared, in the 2,000-member
  14-day worlds the served log's network posts were over-predicted by 5-7% in the top fifth of slots
  and under-predicted as much in the bottom fifth. The intercepts keep the policies' click rates out
  of the position terms (position 0 is the same row in each).

The logistic model is followed by a calibration layer: per logging policy and source (and within it,
for the items new to the FPR and the others), Platt scaling of the logit at the top of the feed on
that policy's training rows, with the position terms added after it, unscaled. A training set can
mix logs of different policies (a simulator's, another system's, the mixer's own), and the same
features click at different rates under each, because each policy picked its items by things the
features do not show. One model fitted on all of them is calibrated on their mixture only: in the
2,000-member 14-day world (seed 11), before the per-policy intercepts, it over-predicted network
posts on the mixer's own log by a fifth (O/E 0.80) and under-predicted courses (1.15); the
intercepts are per type, the layer also scales each source's score and its new items. The serving
policy's scaling is what the mixer ranks and reports by; another policy's is used to predict rows
logged by it (``logged_by``), e.g. to measure calibration on its log.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from features.families import DERIVED_BY_FAMILY, PRIOR_CTR, Columns, height, numeric
from feedrank.contracts import ItemType
from rankers.calibration import PlattCalibrator
from rankers.vectors import sigmoid

TYPE_FEATURES = [f"type_{t.value}" for t in ItemType]
AGED_TYPES = [t.value for t in ItemType if t != ItemType.MEMBER]
# Freshness as decays with a day's and a week's half-life, per type: bounded, so traffic older than the
# training window's does not extrapolate (a log-age term did, and under-predicted later traffic).
AGE_HALF_LIVES_H = {"1d": 24.0, "7d": 168.0}
AGE_FEATURES = [f"fresh_{w}__{t}" for t in AGED_TYPES for w in AGE_HALF_LIVES_H]
# Examination multiplies the click probability; on the logit scale its slope depends on how likely
# the item is to be clicked at all, so each item type gets its own log(1 + position) term.
POSITION_FEATURES = {t.value: f"log_position__{t.value}" for t in ItemType}
# Fatigue per type: whether and how often the member was shown the item before, on top of the shared
# ``member_item`` terms. The same earlier impressions mean different things per type and per the
# policy that repeated them, and one shared log-count term fitted their mixture: in the 4,000-member
# 14-day world (seed 11) the simulator's courses had O/E against the truth 1.11 when unseen, falling
# with the count to 0.71 for the most repeated, so as repeats piled up their O/E fell from 1.04 to
# 0.93 across the days (held out 0.937; with these terms 0.965).
SEEN_FEATURES: dict[str, tuple[str, str]] = {
    f"{kind}__{t.value}": (t.value, kind) for t in ItemType for kind in ("seen_before", "log_seen")
}

# Reach per type: how many members first saw the item in the last hour, on top of the shared term. It
# means different things per type: a post's is spent as it ages, while a fixed catalogue's (courses)
# falls as members run through it, its appeal unchanged, and the shared weight, fitted mostly on posts
# and jobs, read that fall as rising appeal. In the 4,000-member 14-day world (seed 11) the simulator's
# courses had held-out O/E against the truth 0.965, by day falling from 1.02 to 0.96; with these terms
# 0.984 (1.01 to 0.98). The day's velocity per type as well fixed that world and overshot in a smaller one.
REACH_FEATURES: dict[str, tuple[str, str]] = {
    f"item_stats__log_imp_1h__{t.value}": (t.value, "item_stats__log_imp_1h") for t in ItemType
}
# The item's engagements and impressions over the week, as volumes: left out, its week's rate stays. A
# volume measures how much the logging policy showed the item as much as its appeal, and it trends: a
# fixed catalogue's (courses) falls as members run through it, and a world's rises while its week fills.
# The model read that trend as a change in appeal: in the 4,000-member 14-day world (seed 11) the
# simulator's courses had O/E against the truth falling day by day from 1.014 to 0.977 (held out 0.980;
# a copy per type did the same, 0.982); without the volumes 0.996-1.003 every day (held out 0.998),
# and every source's held-out AUC and log loss were unchanged or better on both logs.
VOLUME_FEATURES = ("item_stats__log_imp_7d", "item_stats__log_eng_7d")
# Every per-type copy of a shared value: column -> (item type, the value ``design_array`` masks by it).
PER_TYPE_FEATURES: dict[str, tuple[str, str]] = {**SEEN_FEATURES, **REACH_FEATURES}

# The columns that do not depend on the sources seen in training, by family.
BASE_FAMILIES: dict[str, list[str]] = {
    fam: [c for c in cols if c not in VOLUME_FEATURES] for fam, cols in DERIVED_BY_FAMILY.items()
}
BASE_FAMILIES["X_t"] = [*BASE_FAMILIES["X_t"], *TYPE_FEATURES, *AGE_FEATURES, *REACH_FEATURES]
BASE_FAMILIES["X_io"] = [*BASE_FAMILIES["X_io"], *SEEN_FEATURES]
BASE_FAMILIES["position"] = list(POSITION_FEATURES.values())
BASE_COLUMNS: list[str] = [c for cols in BASE_FAMILIES.values() for c in cols]


SOURCE_TERMS = ("source", "fpr_logit", "fpr_new_item")

LOGGED_BY = "logged_by"  # the column naming the policy that logged a training row
SERVING_POLICY = "served"  # the mixer's own traffic: a row without ``logged_by`` is the serving policy's
# A policy's source is Platt-scaled only with this many clicks and as many non-clicks among its
# rows; with fewer, the logistic model's own logit stands.
CALIBRATION_MIN_CLASS = 30


def source_columns(sources: list[str]) -> list[str]:
    return [f"{term}__{s}" for s in sources for term in SOURCE_TERMS]


def policy_columns(policies: list[str]) -> list[str]:
    """The intercept and position term per item type of rows logged by each of ``policies`` (other than
    the serving policy)."""
    return [f"{c}__{p}" for p in policies for t in ItemType for c in (f"type_{t.value}", POSITION_FEATURES[t.value])]


# What a saved model's inputs must match to be served: the fixed columns, then each source's terms.
SCHEMA: list[str] = [*BASE_COLUMNS, *source_columns(["SOURCE"])]


def design_array(X: pd.DataFrame | Columns, sources: list[str], policies: list[str] | None = None) -> np.ndarray:
    """Raw candidate rows to the model's columns (``BASE_COLUMNS``, then ``source_columns(sources)``,
    then ``policy_columns(policies)``).

    A missing derived feature means "no history": zero for counts and flags, the prior for rates. A
    source not in ``sources`` (an FPR added after training) contributes nothing but its row's other
    features. A row logged by one of ``policies`` has its position in that policy's terms, not in
    ``BASE_COLUMNS``' (the serving policy's), and its type in both; a row of any other policy is the
    serving policy's.
    """
    n = height(X)
    policies = policies or []
    n_fixed = len(BASE_COLUMNS) + len(SOURCE_TERMS) * len(sources)
    out = np.zeros((n, n_fixed + 2 * len(ItemType) * len(policies)))
    itype = np.asarray(X["item_type"]).astype(str) if "item_type" in X else np.full(n, "")
    age_s = numeric(X, "item_age_s", np.nan)
    age_h = age_s / 3600.0
    known_age = np.isfinite(age_h)
    decay = {w: 0.5 ** (np.clip(np.nan_to_num(age_h), 0, None) / h) for w, h in AGE_HALF_LIVES_H.items()}
    log_position = np.log1p(np.clip(numeric(X, "position", 0.0), 0, None))
    log_seen = np.clip(numeric(X, "member_item__log_seen", 0.0), 0, None)  # log1p of a count
    shared = {  # the values of PER_TYPE_FEATURES, each computed once
        "seen_before": (log_seen > 0).astype(float),
        "log_seen": log_seen,
        "item_stats__log_imp_1h": numeric(X, "item_stats__log_imp_1h", 0.0),
    }
    of_type = {t.value: itype == t.value for t in ItemType}
    if policies:
        by = logged_by(X)
        at = n_fixed
        for policy in policies:
            mine = by == policy
            for t in POSITION_FEATURES:  # in policy_columns' order
                out[:, at] = mine & of_type[t]
                out[:, at + 1] = np.where(mine & of_type[t], log_position, 0.0)
                at += 2
            log_position = np.where(mine, 0.0, log_position)  # not also in the serving policy's terms
    for j, c in enumerate(BASE_COLUMNS):
        if c in TYPE_FEATURES:
            out[:, j] = of_type[c.removeprefix("type_")]
        elif c in AGE_FEATURES:
            window, t = c.removeprefix("fresh_").split("__")
            out[:, j] = np.where(of_type[t] & known_age, decay[window], 0.0)
        elif c in PER_TYPE_FEATURES:
            t, value = PER_TYPE_FEATURES[c]
            out[:, j] = np.where(of_type[t], shared[value], 0.0)
        elif c.startswith("log_position__"):
            out[:, j] = np.where(of_type[c.removeprefix("log_position__")], log_position, 0.0)
        else:
            out[:, j] = numeric(X, c, PRIOR_CTR if "__ctr_" in c else 0.0)
    src = np.asarray(X["source"]).astype(str) if "source" in X else np.full(n, "")
    # FPR scores are calibrated probabilities: their log-odds is what a logistic model adds up
    p = np.clip(numeric(X, "fpr_score", PRIOR_CTR), 1e-4, 1 - 1e-4)
    logit = np.log(p / (1 - p))
    new_item = new_to_fpr(X).astype(float)
    for k, s in enumerate(sources):
        hit = (src == s).astype(float)
        at = len(BASE_COLUMNS) + len(SOURCE_TERMS) * k
        for j, term in enumerate((hit, hit * logit, hit * new_item)):  # in SOURCE_TERMS' order
            out[:, at + j] = term
    return out


def design_matrix(X: pd.DataFrame, sources: list[str], policies: list[str] | None = None) -> pd.DataFrame:
    """:func:`design_array` with its column names, on ``X``'s index."""
    columns = [*BASE_COLUMNS, *source_columns(sources), *policy_columns(policies or [])]
    return pd.DataFrame(design_array(X, sources, policies), columns=columns, index=X.index)


class SecondPassRanker(ClassifierMixin, BaseEstimator):
    """P(engage | member, item, position) = sigmoid(beta . X_it), fitted on logged impressions."""

    def __init__(self, C: float = 1.0, max_iter: int = 2000, class_weight: str | None = None) -> None:
        self.C = C
        self.max_iter = max_iter
        self.class_weight = class_weight

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> SecondPassRanker:
        y = np.asarray(y).astype(int)
        if len(np.unique(y)) < 2:
            raise ValueError("training labels hold one class only; need both engaged and not-engaged rows")
        if "source" not in X:
            raise ValueError("training rows need a 'source' column: the FPR that proposed each item")
        self.sources_ = sorted(X["source"].astype(str).unique())
        self.policies_ = sorted(set(logged_by(X)) - {SERVING_POLICY})
        self.columns_ = [*BASE_COLUMNS, *source_columns(self.sources_), *policy_columns(self.policies_)]
        self.families_ = {fam: list(cols) for fam, cols in BASE_FAMILIES.items()}
        self.families_["fpr"] = source_columns(self.sources_)
        for c in policy_columns(self.policies_):
            self.families_["position" if c.startswith("log_position__") else "X_t"].append(c)
        self.pipeline_ = Pipeline(
            [
                ("scale", StandardScaler()),
                ("lr", LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight=self.class_weight)),
            ]
        )
        design = design_array(X, self.sources_, self.policies_)
        self.pipeline_.fit(design, y)
        self.classes_ = self.pipeline_.classes_
        terms = self._terms(design)  # summed with the intercept: the pipeline's decision_function
        at_position = self.position_part(terms)
        top = terms.sum(axis=1) + self.intercept - at_position
        self.calibration_ = self._fit_calibration(top, at_position, X, y)
        return self

    def _fit_calibration(
        self, logit: np.ndarray, at_position: np.ndarray, X: pd.DataFrame, y: np.ndarray
    ) -> dict[tuple[str, str, bool | None], PlattCalibrator]:
        """One Platt scaling per (policy, source), and per (policy, source, new to the FPR or not), each where it
        has enough rows of each class, of the logit at the top of the feed (``logit``), with the
        position terms (``at_position``) added unscaled: each group's slope is about how far its FPR's
        score and features can be trusted, not about how examination falls. Fitted on the logistic
        model's own training rows: with about a hundred coefficients against many thousands of rows its
        in-sample logits are not overconfident (held-out O/E on the served log moved from 0.80 to 0.97
        for network posts in the world named above). The split by new items follows their share: an
        FPR's items created since its training grow from a quarter of its answers to over half within
        days, and one scaling for both under-predicted the new jobs by 17% and over-predicted the older
        ones by 5%."""
        groups = pd.DataFrame(
            {"policy": logged_by(X), "source": X["source"].astype(str).to_numpy(), "new": new_to_fpr(X)}
        )
        out: dict[tuple[str, str, bool | None], PlattCalibrator] = {}
        for keys in (["policy", "source"], ["policy", "source", "new"]):
            for key, idx in groups.groupby(keys).indices.items():
                clicks = int(y[idx].sum())
                if min(clicks, len(idx) - clicks) >= CALIBRATION_MIN_CLASS:
                    policy, source, *new = key
                    out[(str(policy), str(source), bool(new[0]) if new else None)] = PlattCalibrator().fit(
                        logit[idx], y[idx], offset=at_position[idx]
                    )
        return out

    def calibrate(
        self,
        logit: np.ndarray,
        sources: np.ndarray,
        new_item: np.ndarray | None = None,
        policy: str = SERVING_POLICY,
        position_effect: np.ndarray | None = None,
    ) -> np.ndarray:
        """The logistic model's ``logit`` at the top of the feed (of items from ``sources``, flagged
        ``new_item`` where new to their FPR: :func:`new_to_fpr`) through ``policy``'s calibration layer,
        then moved by ``position_effect`` (:meth:`position_effect`; none: the top of the feed). The
        layer is the scaling of the source's new or older items where there is one, else the source's,
        else none."""
        check_is_fitted(self, "pipeline_")
        logit = np.asarray(logit, dtype=np.float64)
        out = logit.copy()
        sources = np.asarray(sources).astype(str)
        new = np.zeros(len(logit), dtype=bool) if new_item is None else np.asarray(new_item, dtype=bool)
        layer = getattr(self, "calibration_", {})  # artifacts saved before the layer: none
        for (pol, source, is_new), platt in sorted(layer.items(), key=lambda kv: kv[0][2] is not None):
            if pol != policy or (is_new is not None and new_item is None):
                continue
            hit = (sources == source) if is_new is None else (sources == source) & (new == is_new)
            if hit.any():
                out[hit] = platt.decision_function(logit[hit])
        return out if position_effect is None else out + np.asarray(position_effect, dtype=np.float64)

    def terms(self, X: pd.DataFrame | Columns) -> np.ndarray:
        """Each column's term of the logit (standardised feature x weight), one row per candidate; with
        ``intercept`` they sum to the logit. Computed directly: serving scores one small matrix per
        request, where sklearn's per-call validation would dominate."""
        check_is_fitted(self, "pipeline_")
        return self._terms(design_array(X, self.sources_, getattr(self, "policies_", None)))  # older: none

    def _terms(self, design: np.ndarray) -> np.ndarray:
        scale = self.pipeline_.named_steps["scale"]
        return (design - scale.mean_) / scale.scale_ * self.pipeline_.named_steps["lr"].coef_[0]

    @property
    def intercept(self) -> float:
        check_is_fitted(self, "pipeline_")
        return float(self.pipeline_.named_steps["lr"].intercept_[0])

    def decision_function(self, X: pd.DataFrame | Columns) -> np.ndarray:
        """The calibrated logit of P(engage) under each row's logging policy (``logged_by``)."""
        terms = self.terms(X)
        raw = terms.sum(axis=1) + self.intercept
        at_position = self.position_part(terms)
        sources = np.asarray(X["source"]).astype(str) if "source" in X else np.full(len(raw), "")
        new = new_to_fpr(X)
        policies = logged_by(X)
        out = np.empty_like(raw)
        for policy in np.unique(policies):
            at = policies == policy
            out[at] = self.calibrate(raw[at] - at_position[at], sources[at], new[at], str(policy), at_position[at])
        return out

    def predict_proba(self, X: pd.DataFrame | Columns) -> np.ndarray:
        p = sigmoid(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def position_effect(self, positions: np.ndarray, item_types: np.ndarray) -> np.ndarray:
        """How much the logistic model's logit (before :meth:`calibrate`) moves from the top of the feed
        (position 0) to each of ``positions``, for items of ``item_types``."""
        check_is_fitted(self, "pipeline_")
        scale = self.pipeline_.named_steps["scale"].scale_
        coef = self.pipeline_.named_steps["lr"].coef_[0]
        slope = {t: coef[self.columns_.index(c)] / scale[self.columns_.index(c)] for t, c in POSITION_FEATURES.items()}
        w = np.array([slope.get(str(t), 0.0) for t in item_types])
        return w * np.log1p(np.clip(np.asarray(positions, dtype=float), 0, None))

    def position_part(self, terms: np.ndarray) -> np.ndarray:
        """How far each row's position terms (rows of :meth:`terms`, under the row's policy) move its
        logit from the top of the feed: the terms are standardised, position 0 is the raw value 0."""
        check_is_fitted(self, "pipeline_")
        at = [self.columns_.index(c) for c in self.families_["position"]]
        mean = self.pipeline_.named_steps["scale"].mean_[at]
        scale = self.pipeline_.named_steps["scale"].scale_[at]
        return terms[:, at].sum(axis=1) + float((mean / scale * self.pipeline_.named_steps["lr"].coef_[0][at]).sum())

    def family_sums(self, terms: np.ndarray) -> dict[str, np.ndarray]:
        """``terms`` (rows of :meth:`terms`) summed by feature family, plus the ``intercept``."""
        at = {c: i for i, c in enumerate(self.columns_)}
        out = {fam: terms[:, [at[c] for c in cols]].sum(axis=1) for fam, cols in self.families_.items()}
        out["intercept"] = np.full(len(terms), self.intercept)
        return out

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Each family's additive share of the logit, per row, relative to the average training row
        (features are standardised); with ``intercept`` and ``calibration`` (how far the calibration
        layer moved it) they sum to :meth:`decision_function`."""
        terms = self.terms(X)
        sums = self.family_sums(terms)
        sums["calibration"] = self.decision_function(X) - (terms.sum(axis=1) + self.intercept)
        return pd.DataFrame(sums, index=X.index)

    def coefficients(self) -> pd.Series:
        """The weight of each column per unit of the raw feature (for docs and reviews)."""
        check_is_fitted(self, "pipeline_")
        scale = self.pipeline_.named_steps["scale"].scale_
        return pd.Series(self.pipeline_.named_steps["lr"].coef_[0] / scale, index=self.columns_)


def logged_by(X: pd.DataFrame | Columns) -> np.ndarray:
    """Each row's logging policy: its ``logged_by``, the serving policy where absent."""
    n = height(X)
    if LOGGED_BY not in X:
        return np.full(n, SERVING_POLICY, dtype=object)
    col = pd.Series(np.asarray(X[LOGGED_BY], dtype=object))
    return col.where(col.notna(), SERVING_POLICY).astype(str).to_numpy(dtype=object)


def new_to_fpr(X: pd.DataFrame | Columns) -> np.ndarray:
    """Whether each candidate was created after its FPR's model stopped seeing traffic (``item_age_s``
    below ``fpr_model_age_s``); unknown ages are not known to be new."""
    with np.errstate(invalid="ignore"):  # NaN ages compare False
        return numeric(X, "item_age_s", np.nan) < numeric(X, "fpr_model_age_s", np.nan)
