"""Member x course features, computed from the inventory the same way at training and at serving.

``raw_features`` reads one member and a candidate list from an ``Inventory`` (training calls it inside
``rankers.training.replay``, so every row sees the inventory as it stood when it was served).
``CourseFeaturizer`` turns those into the GLMix design matrix: the dense features plus one-hot member
industry and industry x category crosses, over the vocabulary it was fitted on (unknown values are
all-zero rows, never errors).

The FPR offers only courses the member has not been shown, but its log is mostly repeats: in the
14-day simulated world a course impression was a repeat 17% of the time on the first day and 87% on the
last, and a repeat is clicked less (fatigue). Trained on that log with nothing telling the two apart, the
model's features drifted with the repeats' share (the course's all-time engagement rate fell as they
piled up) and its scores of unseen courses fell 16% in a week while the truth fell 6%. So the course's
rate counts first impressions only, and training marks each row's earlier impressions
(``shown_before``, 0 when serving), which kept the truth-to-score ratio within 2% over the same week.
"""

from __future__ import annotations

import weakref
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from feedrank.contracts import ItemType
from rankers.inventory import Inventory

DENSE = (
    "overlap",  # share of the course's skills the member has
    "new_skills",  # share it would teach, when it builds on at least one skill the member has
    "same_category",  # course category == member industry
    "level_gap",  # |difficulty - seniority| on a 0..2 scale
    "popularity",  # log1p(engagements)
    "ctr",  # logit of the course's smoothed engagement rate on first impressions (members new to it)
    "member_rate",  # logit of the member's smoothed course engagement rate
    "hist_category",  # share of the member's engaged courses in this category
    "hist_skills",  # share of the course's skills among the member's engaged courses' skills
    "skill_category",  # share of the member's skills that the catalog teaches in this course's category
    "shown_before",  # log1p(the member's earlier impressions of the course): 0 when serving (unseen only)
)
SENIORITY_LEVEL = {"intern": 0.0, "junior": 0.5, "mid": 1.0, "senior": 1.5, "lead": 2.0}
DIFFICULTY_LEVEL = {"beginner": 0.0, "intermediate": 1.0, "advanced": 2.0}
PRIOR_RATE, PRIOR_WEIGHT = 0.03, 30.0
HISTORY = 500  # latest engagements read per request: a heavy member's history must not slow serving


def _logit_rate(engaged: np.ndarray | float, shown: np.ndarray | float) -> np.ndarray | float:
    """Engagements per impression, shrunk toward a prior so a new course or member is not extreme."""
    p = (np.asarray(engaged) + PRIOR_RATE * PRIOR_WEIGHT) / (np.asarray(shown) + PRIOR_WEIGHT)
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


_SKILL_CATEGORY: dict[int, tuple[weakref.ref[Inventory], int, dict[str, str]]] = {}


def skill_categories(inv: Inventory) -> dict[str, str]:
    """Each skill's category in the course catalog (its most common one), rebuilt when the catalog grows.

    Members hold skills outside their industry; this tells which categories those skills lead to."""
    courses = inv.by_type.get(ItemType.COURSE, ())
    hit = _SKILL_CATEGORY.get(id(inv))
    if hit is not None and hit[0]() is inv and hit[1] == len(courses):
        return hit[2]
    counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for cid in courses:
        c = inv.items[cid]
        if c.category:
            for sk in c.skills:
                counts[sk][c.category] += 1
    mapping = {sk: cnt.most_common(1)[0][0] for sk, cnt in counts.items()}
    if len(_SKILL_CATEGORY) > 64:
        _SKILL_CATEGORY.clear()
    _SKILL_CATEGORY[id(inv)] = (weakref.ref(inv), len(courses), mapping)
    return mapping


def raw_features(inv: Inventory, member_id: str, item_ids: Sequence[str]) -> tuple[np.ndarray, str, list[str]]:
    """(n, len(DENSE)) dense features, the member's industry and each course's category.

    ``shown_before`` is 0: the candidates are unseen (training fills it in from the log)."""
    prof = inv.members.get(member_id)
    have = prof.skills if prof else frozenset()
    industry = prof.industry if prof else ""
    level = SENIORITY_LEVEL.get(prof.seniority, 1.0) if prof else 1.0
    m_eng = inv.type_engagements.get(member_id, Counter()).get(ItemType.COURSE, 0)
    m_imp = inv.type_impressions.get(member_id, Counter()).get(ItemType.COURSE, 0)
    member_rate = float(_logit_rate(m_eng, m_imp))
    sk_cat = skill_categories(inv)
    member_cats = Counter(c for sk in have if (c := sk_cat.get(sk)))
    n_have = len(have) or 1
    hist_cats: Counter[str] = Counter()
    hist_sk: set[str] = set()
    n_hist = 0
    for it in inv.history.get(member_id, [])[-HISTORY:]:
        if it.item_type == ItemType.COURSE and (c := inv.items.get(it.item_id)) is not None:
            hist_cats[c.category] += 1
            hist_sk |= c.skills
            n_hist += 1
    n = len(item_ids)
    out = np.zeros((n, len(DENSE)), dtype=np.float64)
    cats: list[str] = [""] * n
    items = inv.items
    for j, iid in enumerate(item_ids):
        it = items.get(iid)
        if it is None:
            continue  # an unknown course: no overlap, no engagements, the prior rate
        sk = it.skills
        ns = len(sk) or 1
        ov = len(sk & have)
        cats[j] = it.category
        out[j, 0] = ov / ns
        out[j, 1] = (ns - ov) / ns if ov and sk else 0.0
        out[j, 2] = 1.0 if industry and it.category == industry else 0.0
        out[j, 3] = abs(DIFFICULTY_LEVEL.get(it.difficulty, 1.0) - level)
        out[j, 4] = it.engagements
        out[j, 5] = it.first_engagements
        out[j, 6] = it.viewers
        out[j, 9] = member_cats.get(it.category, 0) / n_have
        if n_hist:
            out[j, 7] = hist_cats.get(it.category, 0) / (n_hist + 1)
            out[j, 8] = len(sk & hist_sk) / ns
    out[:, 4] = np.log1p(out[:, 4])
    out[:, 5] = _logit_rate(out[:, 5], out[:, 6])
    out[:, 6] = member_rate
    return out, industry, cats


class CourseFeaturizer(TransformerMixin, BaseEstimator):
    """Dense features + one-hot member industry + industry x category crosses, as one matrix.

    ``X``: a frame with the ``DENSE`` columns and the member's ``industry`` and course's ``category``.
    The crosses let the global model learn which categories each industry takes up (adjacent fields,
    not only its own), which skill overlap alone cannot see.
    """

    def __init__(self, crosses: bool = True) -> None:
        self.crosses = crosses

    def fit(self, X: pd.DataFrame, y: object = None) -> CourseFeaturizer:
        values = {str(v) for v in (*X["industry"], *X["category"]) if isinstance(v, str) and v}
        vocab = sorted(values)
        self.vocab_ = {v: i for i, v in enumerate(vocab)}
        self.columns_ = [
            *DENSE,
            *(f"industry={v}" for v in vocab),
            *((f"cross={a}|{b}" for a in vocab for b in vocab) if self.crosses else ()),
        ]
        return self

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.asarray(self.columns_, dtype=object)

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "vocab_")
        return self._design(
            X[list(DENSE)].to_numpy(dtype=np.float64), self._codes(X["industry"]), self._codes(X["category"])
        )

    def _codes(self, values: Iterable[object]) -> np.ndarray:
        get = self.vocab_.get
        return np.fromiter((get(v, -1) if isinstance(v, str) else -1 for v in values), dtype=np.int64)

    def _design(self, dense: np.ndarray, industry: np.ndarray, category: np.ndarray) -> np.ndarray:
        """``industry`` and ``category``: vocabulary codes per row (-1: unknown, an all-zero one-hot)."""
        n, k = len(dense), len(self.vocab_)
        out = np.zeros((n, len(self.columns_)), dtype=np.float64)
        out[:, : len(DENSE)] = dense
        rows = np.arange(n)
        known = industry >= 0
        out[rows[known], len(DENSE) + industry[known]] = 1.0
        if self.crosses:
            both = known & (category >= 0)
            out[rows[both], len(DENSE) + k + industry[both] * k + category[both]] = 1.0
        return out

    def member_features(
        self, inv: Inventory, member_id: str, item_ids: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray, str, list[str]]:
        """The serving path: the design matrix for one member's candidates, the dense block (logged), the
        member's industry and the courses' categories (NCF's side ids), without a DataFrame."""
        dense, industry, cats = raw_features(inv, member_id, item_ids)
        ind = np.full(len(item_ids), self.vocab_.get(industry, -1), dtype=np.int64)
        return self._design(dense, ind, self._codes(cats)), dense, industry, cats
