"""The first-pass ranker contract: a candidate source plus a scorer, per inventory.

An FPR answers "what are this member's best k items of my inventory?" with scores on a calibrated
probability scale (P(click | shown in the feed)), its model version, and the features it used, so
that the mixer can log and explain them. Scorers work on a whole candidate list at once: models are
evaluated as one matrix, which is what keeps a k=100 answer within milliseconds.

A member the FPR knows nothing about gets the FPR's cold-start list (its ``cold_start`` source),
scored by the same scorer; scorers treat unknown members and items as "no history", never as errors.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from feedrank.contracts import Candidate, ItemType
from rankers.inventory import Inventory

FeatureColumns = dict[str, np.ndarray]
TRAINED_UNTIL = "trained_until"  # the scorer attribute that holds the end of its training traffic
# The scorer attribute that says whether its model has parameters per item (embeddings learned from its
# traffic); True where absent. A model without any scores an item created after its training exactly
# as it would have before: it sees items only through features every item has.
LEARNS_ITEMS = "learns_items"


def trained_until(scorer: object) -> float | None:
    """The end of ``scorer``'s training traffic (``TrainedFpr.stamp``), or None: a baseline, or a
    model saved before scorers were stamped."""
    return getattr(scorer, TRAINED_UNTIL, None)


def learns_items(scorer: object) -> bool:
    return bool(getattr(scorer, LEARNS_ITEMS, True))


def new_items_after(scorer: object, now: float | None = None) -> float | None:
    """From when items are new to ``scorer``'s model: the end of its training traffic if the model
    learns parameters per item, else None (no item is new to it). The second pass gives an FPR's new
    items their own terms; for a model that never learned items, "new" would only mean "created since
    some date", which stands for the item's age at training time and for another age when serving: in
    the 2,000-member 14-day world (seed 12) the network FPR's posts new to it were over-predicted by
    6% on the held-out days, where they include posts older than any new post in training.

    Of a :class:`RetrainedScorer`, the model deployed at ``now`` (its first without ``now``)."""
    if isinstance(scorer, RetrainedScorer):
        scorer = scorer.at(scorer.deployed[0] if now is None else now)
    return trained_until(scorer) if learns_items(scorer) else None


class CandidateSource(Protocol):
    def candidates(self, inv: Inventory, member_id: str, now: float) -> Iterable[str]:
        """Ids of the items (or members) this inventory could show the member, with no repeats."""
        ...


class Scorer(Protocol):
    version: str

    def score(
        self, inv: Inventory, member_id: str, item_ids: Sequence[str], now: float
    ) -> tuple[np.ndarray, FeatureColumns]:
        """Calibrated P(click) per item, and the features behind it (one array per feature name)."""
        ...


@dataclass
class RetrainedScorer:
    """The model a team had deployed at each moment of a replayed period over which it retrained: from
    ``deployed[i]`` on, ``models[i]`` (the first also before). For offline evaluation; a service loads
    the one artifact it is given.

    A model that stops learning as it ages scores new items ever worse: in the 4,000-member 14-day
    world (seed 12), with the jobs FPR trained once, the second pass over-predicted the held-out jobs
    new to it (O/E 0.87 against the truth) while it was calibrated on the older ones. Trained once, an
    FPR is older on the held-out days than on any day the second pass learned from; retrained daily,
    it is as old on every day. That this calibrates the second pass better is not given: each
    retraining is another model (``evaluation.feed_oracle.train_system`` says what it measured)."""

    deployed: Sequence[float]
    models: Sequence[Scorer]

    def __post_init__(self) -> None:
        if not self.models or len(self.deployed) != len(self.models):
            raise ValueError(f"need one deployment time per model, got {len(self.deployed)} for {len(self.models)}")
        if any(b <= a for a, b in zip(self.deployed, self.deployed[1:], strict=False)):
            raise ValueError("deployment times must increase")

    def at(self, now: float) -> Scorer:
        return self.models[deployed_index(self.deployed, now)]

    @property
    def version(self) -> str:
        return "+".join(m.version for m in self.models)

    @property
    def learns_items(self) -> bool:
        return learns_items(self.models[0])

    def score(
        self, inv: Inventory, member_id: str, item_ids: Sequence[str], now: float
    ) -> tuple[np.ndarray, FeatureColumns]:
        return self.at(now).score(inv, member_id, item_ids, now)


@dataclass
class FirstPassRanker:
    name: str
    source: CandidateSource
    scorer: Scorer
    k: int = 50
    cold_start: CandidateSource | None = None
    serves: ItemType | None = None  # None: whatever the inventory says each item is

    @property
    def model_version(self) -> str:
        return f"{self.name}/{self.scorer.version}"

    @property
    def trained_until(self) -> float | None:
        return trained_until(self.scorer)

    @property
    def learns_items(self) -> bool:
        return learns_items(self.scorer)

    def new_items_after(self, now: float | None = None) -> float | None:
        return new_items_after(self.scorer, now)

    def candidate_ids(self, inv: Inventory, member_id: str, now: float) -> list[str]:
        ids = list(self.source.candidates(inv, member_id, now))
        if not ids and self.cold_start is not None:
            ids = list(self.cold_start.candidates(inv, member_id, now))
        return ids

    def top_k(
        self, inv: Inventory, member_id: str, now: float, k: int | None = None, with_features: bool = False
    ) -> list[Candidate]:
        """The best ``k`` candidates, best first. ``with_features`` attaches what the scorer used to each
        (for logging or debugging; the mixer reads only the scores, and on the wire the features cost
        more to encode and parse than the scores themselves)."""
        k = self.k if k is None else k
        ids = self.candidate_ids(inv, member_id, now)
        if not ids or k <= 0:
            return []
        scores, feats = self.scorer.score(inv, member_id, ids, now)
        scores = np.clip(np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0), 0.0, 1.0)
        top = top_indices(scores, k)
        if not with_features:
            return [self._candidate(inv, ids[i], float(scores[i]), {}) for i in top]
        return [self._candidate(inv, ids[i], float(scores[i]), {n: float(v[i]) for n, v in feats.items()}) for i in top]

    def _candidate(self, inv: Inventory, item_id: str, score: float, feats: dict[str, float]) -> Candidate:
        item = inv.items.get(item_id)
        if item is not None:
            return Candidate(
                item_id=item_id, item_type=item.item_type, actor_id=item.actor_id, score=score, features=feats
            )
        # a member as the item (people you may know): the actor is that member
        return Candidate(item_id=item_id, item_type=ItemType.MEMBER, actor_id=item_id, score=score, features=feats)


@dataclass
class RetrainedRanker(FirstPassRanker):
    """An FPR as its team had it deployed at each moment of a replayed period over which it retrained
    (:class:`RetrainedScorer`): each model's own ranker answers, since a source may use the model (the
    jobs FPR's nearest neighbours, the people FPR's LINE neighbours). Build with :meth:`of`."""

    rankers: Sequence[FirstPassRanker] = ()

    @classmethod
    def of(cls, deployed: Sequence[float], rankers: Sequence[FirstPassRanker]) -> RetrainedRanker:
        if not rankers:
            raise ValueError("need at least one ranker")
        first = rankers[0]
        scorer = RetrainedScorer(list(deployed), [r.scorer for r in rankers])
        return cls(first.name, first.source, scorer, first.k, first.cold_start, first.serves, list(rankers))

    def at(self, now: float) -> FirstPassRanker:
        assert isinstance(self.scorer, RetrainedScorer)
        return self.rankers[deployed_index(self.scorer.deployed, now)]

    def candidate_ids(self, inv: Inventory, member_id: str, now: float) -> list[str]:
        return self.at(now).candidate_ids(inv, member_id, now)

    def top_k(
        self, inv: Inventory, member_id: str, now: float, k: int | None = None, with_features: bool = False
    ) -> list[Candidate]:
        return self.at(now).top_k(inv, member_id, now, k, with_features)


def deployed_index(deployed: Sequence[float], now: float) -> int:
    """Which of the models deployed at the (increasing) times ``deployed`` serves at ``now``: the last
    deployed by then, the first before any."""
    return max(bisect.bisect_right(deployed, now) - 1, 0)


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores, best first; ties keep candidate order (deterministic)."""
    n = len(scores)
    if k < n:
        part = np.argpartition(-scores, k - 1)[:k]
        # everything tied with the k-th score competes on candidate order
        kth = scores[part].min()
        pool = np.flatnonzero(scores >= kth)
    else:
        pool = np.arange(n)
    order = pool[np.lexsort((pool, -scores[pool]))]
    return order[:k]
