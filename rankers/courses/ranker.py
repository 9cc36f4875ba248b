"""Courses FPR: catalog courses the member has not seen, scored by a calibrated blend of neural
collaborative filtering and a GLMix response model (LinkedIn Learning's design).

``build(model=None)`` serves ``PopularityScorer`` until the first training run (``train.py``) produces a
``CoursesScorer``; a member the catalog has nothing for gets the most engaged courses instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from feedrank.contracts import ItemType
from rankers.baselines import PopularityScorer
from rankers.calibration import PlattCalibrator
from rankers.cold_start import PopularItems
from rankers.courses.features import DENSE, CourseFeaturizer
from rankers.courses.glmix import GLMix
from rankers.courses.ncf import NeuMFClassifier
from rankers.courses.settings import load_settings
from rankers.fpr import FeatureColumns, FirstPassRanker, Scorer
from rankers.inventory import Inventory

# The features each candidate carries to the mixer (each costs a dict entry per candidate, so not all)
LOGGED = ("overlap", "new_skills", "same_category", "popularity", "ctr")


@dataclass
class CatalogSource:
    """Every visible course the member has not been shown yet, in catalog order."""

    def candidates(self, inv: Inventory, member_id: str, now: float) -> Iterator[str]:
        seen = inv.seen.get(member_id, set())
        items = inv.items
        for item_id in inv.by_type.get(ItemType.COURSE, ()):
            if item_id not in seen and inv.can_see(member_id, items[item_id]):
                yield item_id


@dataclass
class CoursesScorer:
    """P(click) = Platt(w_ncf * NCF logit + w_glmix * GLMix logit + b), one matrix pass per request.

    Every model part is numpy at serving time (NCF's weights were exported after training), and the
    whole object pickles with joblib as the ``fpr-courses`` artifact.
    """

    featurizer: CourseFeaturizer
    glmix: GLMix
    ncf: NeuMFClassifier
    blend: tuple[float, float, float]  # (w_ncf, w_glmix, intercept)
    calibrator: PlattCalibrator
    version: str = "ncf-glmix"

    def logits(
        self, inv: Inventory, member_id: str, item_ids: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(NCF logit, GLMix logit, dense features) per candidate."""
        X, dense, industry, cats = self.featurizer.member_features(inv, member_id, item_ids)
        g = self.glmix.decision_arrays(X, self.glmix.member_row(member_id), self.glmix.course_rows(item_ids))
        ncf = self.ncf
        n = ncf.logits_rows(
            ncf.member_row(member_id),
            ncf.course_rows(item_ids),
            ncf.member_side_row(industry),
            ncf.course_side_rows(cats),
        )
        return n, g, dense

    def blended(self, ncf_logit: np.ndarray, glmix_logit: np.ndarray) -> np.ndarray:
        w_n, w_g, b = self.blend
        return w_n * ncf_logit + w_g * glmix_logit + b

    def score(
        self, inv: Inventory, member_id: str, item_ids: Sequence[str], now: float
    ) -> tuple[np.ndarray, FeatureColumns]:
        if not len(item_ids):
            return np.zeros(0), {}
        n, g, dense = self.logits(inv, member_id, item_ids)
        probs = self.calibrator.predict(self.blended(n, g))
        feats: FeatureColumns = {name: dense[:, DENSE.index(name)] for name in LOGGED}
        feats["ncf_logit"] = n
        feats["glmix_logit"] = g
        return probs, feats


def build(name: str = "courses", k: int = 30, model: Scorer | None = None, **params: Any) -> FirstPassRanker:
    """The courses FPR around ``model`` (the trained scorer), or popularity before the first training."""
    cfg = load_settings(params)
    return FirstPassRanker(
        name,
        CatalogSource(),
        model if model is not None else PopularityScorer(),
        k,
        cold_start=PopularItems(ItemType.COURSE, limit=int(cfg["source"]["cold_start_limit"])),
        serves=ItemType.COURSE,
    )
