"""The simple baselines every FPR must beat: popularity, recency and common neighbours.

They are scorers like any other (same contract), so the evaluation ranks the same candidates with
the model and with its baseline. Scores are monotone squashes into [0, 1], not calibrated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rankers.fpr import FeatureColumns
from rankers.inventory import Inventory


@dataclass
class PopularityScorer:
    """More engagements first; recency breaks ties."""

    version: str = "popularity"

    def score(
        self, inv: Inventory, member_id: str, item_ids: Sequence[str], now: float
    ) -> tuple[np.ndarray, FeatureColumns]:
        items = [inv.items.get(i) for i in item_ids]
        eng = np.array([it.engagements if it else 0 for it in items], dtype=np.float64)
        created = np.array([it.created_at if it else 0.0 for it in items], dtype=np.float64)
        age_h = np.maximum(0.0, now - created) / 3600
        raw = np.log1p(eng) + 1e-3 / (1.0 + age_h)
        return 1.0 - np.exp(-raw), {"popularity": np.log1p(eng)}


@dataclass
class RecencyScorer:
    """Newest first."""

    version: str = "recency"

    def score(
        self, inv: Inventory, member_id: str, item_ids: Sequence[str], now: float
    ) -> tuple[np.ndarray, FeatureColumns]:
        created = np.array([(it.created_at if (it := inv.items.get(i)) else 0.0) for i in item_ids])
        age_h = np.maximum(0.0, now - created) / 3600
        return 1.0 / (1.0 + age_h), {"age_hours": age_h}


@dataclass
class CommonNeighboursScorer:
    """Members with more common connections first."""

    version: str = "common-neighbours"

    def score(
        self, inv: Inventory, member_id: str, item_ids: Sequence[str], now: float
    ) -> tuple[np.ndarray, FeatureColumns]:
        mine = inv.connections.get(member_id, set())
        common = np.array([len(mine & inv.connections.get(m, set())) for m in item_ids], dtype=np.float64)
        return common / (1.0 + common), {"common_connections": common}
