"""Network-activity FPR (FollowFeed): recent posts by the member's connections and follows.

Candidates come from the member's own network (``FollowFeedSource``); a member with no network, or
whose network posted nothing recent, gets the most engaged recent posts instead (cold start). The
trained scorer is LightGBM over the shared featurizer, Platt-calibrated; before the first training
run the FPR serves its baseline (recency), so a fresh deployment still answers.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from feedrank.contracts import ItemType
from rankers.baselines import RecencyScorer
from rankers.cold_start import PopularItems
from rankers.fpr import FeatureColumns, FirstPassRanker, Scorer
from rankers.inventory import Inventory
from rankers.network.features import N_FEATURES, NetworkFeaturizer
from rankers.network.model import NetworkClickModel
from rankers.network.settings import section


@dataclass
class FollowFeedSource:
    """Posts of connections and followed actors, newest ``per_actor`` each, no older than ``max_age_hours``.

    Visibility and blocks (either way) are the inventory's ``can_see``. Posts the member was already
    shown are left out by default (a feed of updates shows each once; a second showing is clicked half
    as often). Actors are visited in sorted order so that the candidate order, and with it
    tie-breaking, is the same in every process.
    """

    max_age_hours: float = 24 * 14
    per_actor: int = 20
    max_candidates: int = 500
    exclude_seen: bool = True

    def candidates(self, inv: Inventory, member_id: str, now: float) -> list[str]:
        actors = inv.connections.get(member_id, set()) | inv.follows.get(member_id, set())
        oldest = now - self.max_age_hours * 3600
        seen = inv.seen.get(member_id, set()) if self.exclude_seen else set()
        out: list[str] = []
        for actor in sorted(actors):
            for item_id in inv.by_actor.get(actor, ())[-self.per_actor :]:
                item = inv.items[item_id]
                if (
                    item.item_type == ItemType.POST
                    and oldest <= item.created_at <= now
                    and item_id not in seen
                    and inv.can_see(member_id, item)
                ):
                    out.append(item_id)
        if len(out) > self.max_candidates:
            # a hub's network: the newest posts bound the scoring work (and recency matters most)
            keep = set(heapq.nlargest(self.max_candidates, out, key=lambda i: (inv.items[i].created_at, i)))
            out = [i for i in out if i in keep]
        return out


@dataclass
class NetworkScorer:
    """The trained scorer: featurizer + calibrated LightGBM. Picklable; ``version`` is set on load."""

    featurizer: NetworkFeaturizer
    model: NetworkClickModel
    version: str = "lgbm-v1"
    metrics: dict[str, float] = field(default_factory=dict)
    # Posts enter only through features every post has (age, author, topic, rates): one created after
    # training is not new to the model (``rankers.fpr.new_items_after``).
    learns_items: ClassVar[bool] = False

    def compatible(self) -> bool:
        """Whether this (unpickled) model was trained on as many features as this code computes."""
        return getattr(self.model, "n_features_in_", N_FEATURES) == N_FEATURES

    def score(
        self, inv: Inventory, member_id: str, item_ids: Sequence[str], now: float
    ) -> tuple[np.ndarray, FeatureColumns]:
        x = self.featurizer.transform(inv, member_id, item_ids, now)
        if len(item_ids) == 0:
            return np.zeros(0), self.featurizer.columns(x)
        return self.model.predict_click(x), self.featurizer.columns(x)


def build(name: str = "network", k: int = 50, model: Scorer | None = None, **params: Any) -> FirstPassRanker:
    """The FPR around ``model`` (the trainer's scorer), or around the recency baseline before training.

    ``params`` override ``config.toml`` (``max_age_hours``, ``per_actor``, ``source = {...}`` ...).
    """
    src = section("source", params)
    cold = section("cold_start", params)
    source = FollowFeedSource(
        max_age_hours=float(src["max_age_hours"]),
        per_actor=int(src["per_actor"]),
        max_candidates=int(src["max_candidates"]),
        exclude_seen=bool(src["exclude_seen"]),
    )
    cold_start = PopularItems(ItemType.POST, limit=int(cold["limit"]), max_age_hours=cold.get("max_age_hours"))
    scorer: Scorer = model if model is not None else RecencyScorer()
    return FirstPassRanker(name, source, scorer, k, cold_start=cold_start, serves=ItemType.POST)
