"""People-you-may-know FPR: graph candidates (friends of friends, common companies, LINE neighbours)
scored by a calibrated click model over graph, embedding and profile features.

The source reads the live inventory, so a connection or block made after training is respected at the
next request; only the LINE vectors (and their precomputed neighbour lists) date from training.
Before the first training run, ``build(model=None)`` serves the common-neighbours baseline.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from feedrank.contracts import ItemType
from rankers.baselines import CommonNeighboursScorer
from rankers.calibration import PlattCalibrator
from rankers.cold_start import PopularMembers
from rankers.fpr import FeatureColumns, FirstPassRanker, Scorer
from rankers.inventory import Inventory
from rankers.people.features import FEATURES, IndustryAffinity, MemberEmbeddings, matrix, people_features
from rankers.people.model import PeopleClickModel
from rankers.people.settings import load_settings


@dataclass
class PeopleSource:
    """Friends of friends (most common connections first), then members following the same companies,
    then LINE nearest neighbours. Never the member, a connection, or anyone blocked either way.

    The data has no schools, so "common companies" is the only shared-affiliation source. The
    company -> followers index is rebuilt from the live inventory at most every ``refresh_seconds``
    of ``now`` (Inventory keeps follower counts, not follower lists); the member's own follows are
    always read live.
    """

    friends_of_friends: int = 300
    common_companies: int = 100
    line_neighbours: int = 50
    embeddings: MemberEmbeddings | None = None
    refresh_seconds: float = 300.0
    _followers: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)
    _built: tuple[int, int, float] = field(default=(0, 0, float("-inf")), init=False, repr=False)

    def candidates(self, inv: Inventory, member_id: str, now: float) -> list[str]:
        mine = inv.connections.get(member_id, set())
        blocks = inv.blocks

        def ok(c: str) -> bool:
            return c != member_id and c not in mine and not inv.is_blocked(member_id, c)

        out: dict[str, None] = {}
        if mine and self.friends_of_friends > 0:
            counts: Counter[str] = Counter()
            for z in mine:
                counts.update(inv.connections.get(z, ()))
            # Blocks are rare: drop them from the pool before ranking, so they never take a slot.
            pool = (
                (n, c)
                for c, n in counts.items()
                if c not in mine and c != member_id and not (blocks and inv.is_blocked(member_id, c))
            )
            for _, c in heapq.nlargest(self.friends_of_friends, pool):
                out[c] = None
        if self.common_companies > 0:
            self._company_candidates(inv, member_id, now, ok, out)
        if self.embeddings is not None and self.line_neighbours > 0:
            for c in self.embeddings.similar(member_id, self.line_neighbours):
                if c not in out and ok(c):
                    out[c] = None
        return list(out)

    def _company_candidates(
        self, inv: Inventory, member_id: str, now: float, ok: Callable[[str], bool], out: dict[str, None]
    ) -> None:
        members = inv.members
        mine = [f for f in inv.follows.get(member_id, ()) if f not in members]
        if not mine:
            return
        inv_id, applied, at = self._built
        if inv_id != id(inv) or inv.events_applied < applied or not 0 <= now - at < self.refresh_seconds:
            index: dict[str, list[str]] = {}
            for m, fs in inv.follows.items():
                for f in fs:
                    if f not in members:
                        index.setdefault(f, []).append(m)
            self._followers, self._built = index, (id(inv), inv.events_applied, now)
        counts: Counter[str] = Counter()
        for f in mine:
            counts.update(self._followers.get(f, ()))
        pool = ((n, c) for c, n in counts.items() if c not in out and ok(c))
        for _, c in heapq.nlargest(self.common_companies, pool):
            out[c] = None


@dataclass
class PeopleScorer:
    """Calibrated P(click) on a member card: the click model's log-odds through a Platt calibrator."""

    model: PeopleClickModel
    calibrator: PlattCalibrator
    embeddings: MemberEmbeddings | None = None
    affinity: IndustryAffinity | None = None
    version: str = "people-line-v1"

    def features(self, inv: Inventory, member_id: str, item_ids: Sequence[str]) -> FeatureColumns:
        return people_features(inv, member_id, item_ids, self.embeddings, self.affinity)

    def score(
        self, inv: Inventory, member_id: str, item_ids: Sequence[str], now: float
    ) -> tuple[np.ndarray, FeatureColumns]:
        if not item_ids:
            return np.zeros(0), {f: np.zeros(0) for f in FEATURES}
        feats = self.features(inv, member_id, item_ids)
        return self.calibrator.predict(self.model.decision_function(matrix(feats))), feats


def build(name: str = "people", k: int = 20, model: Scorer | None = None, **params: Any) -> FirstPassRanker:
    """The FPR around a trained ``PeopleScorer`` (its LINE neighbours feed the source), or around the
    common-neighbours baseline before the first training run."""
    cfg = load_settings(params)["candidates"]
    source = PeopleSource(
        friends_of_friends=int(cfg["friends_of_friends"]),
        common_companies=int(cfg["common_companies"]),
        line_neighbours=int(cfg["line_neighbours"]),
        embeddings=getattr(model, "embeddings", None),
    )
    scorer: Scorer = model if model is not None else CommonNeighboursScorer()
    cold = PopularMembers(limit=int(cfg["cold_start"]))
    return FirstPassRanker(name, source, scorer, k, cold_start=cold, serves=ItemType.MEMBER)
