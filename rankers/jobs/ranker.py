"""Jobs FPR: open jobs the member may see, retrieved by text and Prod2Vec neighbours and popularity, and
scored by the tower model (calibrated P(click)); the popularity baseline serves until the first training.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from feedrank.contracts import EventType, ItemType
from rankers.baselines import PopularityScorer
from rankers.calibration import PlattCalibrator
from rankers.cold_start import PopularItems
from rankers.fpr import FeatureColumns, FirstPassRanker
from rankers.inventory import Inventory, Item
from rankers.jobs.features import FEATURES, JobFeaturizer
from rankers.jobs.models import TowerClassifier
from rankers.jobs.settings import settings


@dataclass
class JobsSource:
    """Open (not older than ``max_age_hours``), visible jobs the member has not applied to.

    Below ``take_all_below`` eligible jobs every one is a candidate (the scorer is cheap enough); above
    it, the union of the jobs nearest the member's profile text, nearest the member's engaged jobs in
    Prod2Vec space, and the most engaged ones.
    """

    max_age_hours: float = 720.0
    take_all_below: int = 2000
    knn_text: int = 300
    knn_prod2vec: int = 100
    popular: int = 100
    exclude_applied: bool = True
    featurizer: JobFeaturizer | None = None

    def eligible(self, inv: Inventory, member_id: str, now: float) -> list[Item]:
        oldest = now - self.max_age_hours * 3600.0
        applied = (
            {i.item_id for i in inv.history.get(member_id, ()) if i.event_type == EventType.APPLY}
            if self.exclude_applied
            else set()
        )
        out = []
        for item_id in inv.by_type.get(ItemType.JOB, ()):
            it = inv.items[item_id]
            if oldest <= it.created_at <= now and item_id not in applied and inv.can_see(member_id, it):
                out.append(it)
        return out

    def candidates(self, inv: Inventory, member_id: str, now: float) -> list[str]:
        items = self.eligible(inv, member_id, now)
        ids = [it.item_id for it in items]
        if len(ids) <= self.take_all_below:
            return ids
        keep = {
            it.item_id
            for it in heapq.nlargest(self.popular, items, key=lambda it: (it.engagements, it.created_at, it.item_id))
        }
        if self.featurizer is not None:
            keep.update(self._text_neighbours(inv, member_id, ids))
            keep.update(self._prod2vec_neighbours(inv, member_id, ids))
        return [i for i in ids if i in keep]

    def _text_neighbours(self, inv: Inventory, member_id: str, ids: list[str]) -> list[str]:
        f = self.featurizer
        assert f is not None
        if member_id not in inv.members:
            return []
        sl = f.texts.encoder.lsa_slice
        m = f.texts.matrix("member")[f.member_row(inv, member_id), sl]
        rows = f.job_rows(inv, ids)
        return _top(ids, f.texts.matrix("job")[rows, sl] @ m, self.knn_text)

    def _prod2vec_neighbours(self, inv: Inventory, member_id: str, ids: list[str]) -> list[str]:
        f = self.featurizer
        assert f is not None
        table = f.prod2vec
        hist = table.rows(f.member_history(inv, member_id))
        hist = hist[hist >= 0]
        if len(hist) == 0:
            return []
        rows = table.rows(ids)
        has = np.flatnonzero(rows >= 0)
        sims = table.matrix[rows[has]] @ table.matrix[hist].mean(axis=0)
        return _top([ids[i] for i in has], sims, self.knn_prod2vec)


def _top(ids: Sequence[str], scores: np.ndarray, k: int) -> list[str]:
    if len(ids) <= k:
        return list(ids)
    return [ids[i] for i in np.argpartition(-scores, k - 1)[:k]]


class JobsScorer:
    """Calibrated P(click) from the tower model over the ranking features.

    Tower outputs of members and jobs depend only on their (cached) text vectors, so they are cached
    too, by text row: a request computes only the interaction tower and the head.
    """

    def __init__(
        self,
        featurizer: JobFeaturizer,
        tower: TowerClassifier,
        calibrator: PlattCalibrator,
        tower_text: np.ndarray,
        version: str = "tower-v1",
    ) -> None:
        self.featurizer = featurizer
        self.tower = tower
        self.calibrator = calibrator
        self.tower_text = tower_text
        self.version = version
        self.feature_names = list(FEATURES)
        self._out: dict[str, np.ndarray] = {}

    def compatible(self) -> bool:
        """Whether this (unpickled) model was trained on the features this code computes."""
        return getattr(self, "feature_names", None) == FEATURES

    def _tower_out(self, kind: str, rows: np.ndarray) -> np.ndarray:
        cached = self._out.get(kind)
        n_cached = 0 if cached is None else len(cached)
        need = int(rows.max()) + 1 if len(rows) else 0
        if need > n_cached:
            mat = self.featurizer.texts.matrix(kind)[:, self.tower_text]
            fn = self.tower.member_tower if kind == "member" else self.tower.job_tower
            new = fn(mat[n_cached:])
            cached = new if cached is None else np.vstack([cached, new])
            self._out[kind] = cached
        assert cached is not None
        return cached[rows]

    def warm(self) -> None:
        """Pays serving's one-time costs up front: tower outputs of every cached member and job, and
        loading MiniLM (seconds), which the first member or job unseen in training would otherwise wait for."""
        if (minilm := self.featurizer.texts.encoder.minilm_) is not None:
            minilm.load()
        for kind in ("member", "job"):
            n = len(self.featurizer.texts.tables[kind])
            if n:
                self._tower_out(kind, np.array([n - 1]))

    def raw(self, inv: Inventory, member_id: str, item_ids: Sequence[str], now: float) -> tuple[np.ndarray, Any]:
        b = self.featurizer.compute(inv, member_id, item_ids, now)
        m_out = self._tower_out("member", np.array([b.member_row]))
        j_out = self._tower_out("job", b.job_rows)
        return self.tower.logits(b.X, m_out, j_out), b

    def score(
        self, inv: Inventory, member_id: str, item_ids: Sequence[str], now: float
    ) -> tuple[np.ndarray, FeatureColumns]:
        if len(item_ids) == 0:
            return np.zeros(0), {name: np.zeros(0) for name in [*FEATURES, "tower_logit"]}
        logit, b = self.raw(inv, member_id, item_ids, now)
        feats = {name: b.X[:, j] for j, name in enumerate(FEATURES)}
        feats["tower_logit"] = logit
        return self.calibrator.predict(logit), feats

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_out"] = {}  # recomputed from the weights on first use
        return state


def build(name: str = "jobs", k: int = 50, model: Any | None = None, **params: Any) -> FirstPassRanker:
    """The jobs FPR around a trained scorer (``JobsScorer``), or the popularity baseline before training."""
    s = settings(params)
    featurizer = getattr(model, "featurizer", None)
    source = JobsSource(
        max_age_hours=float(s["max_age_hours"]),
        take_all_below=int(s["take_all_below"]),
        knn_text=int(s["knn_text"]),
        knn_prod2vec=int(s["knn_prod2vec"]),
        popular=int(s["popular"]),
        exclude_applied=bool(s["exclude_applied"]),
        featurizer=featurizer if isinstance(featurizer, JobFeaturizer) else None,
    )
    cold = PopularItems(ItemType.JOB, limit=int(s["cold_start_limit"]), max_age_hours=float(s["max_age_hours"]))
    scorer = model if model is not None else PopularityScorer()
    if s["warm_on_build"] and isinstance(scorer, JobsScorer):
        scorer.warm()
    return FirstPassRanker(name, source, scorer, k, cold_start=cold, serves=ItemType.JOB)
