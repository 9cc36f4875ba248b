"""The inventory and the online store's feature rows, folded from the same events in one replay.

The offline evaluations of the whole system (``feed_oracle``, ``served_log``) need both as of each
request: what the FPRs see, and what the mixer reads from the feature store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.families import Columns, apply_event, height, rows_of
from features.training_set import stored_columns, stored_vector
from feedrank.contracts import MemberEvent
from rankers.inventory import Inventory


@dataclass
class FeatureInventory(Inventory):
    """The inventory plus the feature rows (``view|entities`` -> row) the feature store would hold,
    folded from the same events, so that a replay gives both as of each request."""

    rows: dict[str, dict] = field(default_factory=dict)

    def apply(self, e: MemberEvent) -> None:
        super().apply(e)
        apply_event(e, self.rows)


def stored_for(rows: Mapping[str, dict], member_id: str, candidates: pd.DataFrame | Columns) -> pd.DataFrame:
    """The stored feature columns (``view__column``) of each candidate, row for row, as the online store
    returns them (``FeastRedisLayout.read_columns``): every stored column of every view, NaN where the
    row does not exist. The same columns for every request, so a log of many requests concatenates
    aligned frames."""
    return pd.DataFrame(stored_arrays(rows, member_id, candidates), index=range(height(candidates)))


def stored_arrays(
    rows: Mapping[str, dict], member_id: str, candidates: pd.DataFrame | Columns
) -> dict[str, np.ndarray]:
    """:func:`stored_for` as plain columns: building a DataFrame per request costs more than the reads."""
    keys = zip(candidates["item_id"], candidates["actor_id"], candidates["item_type"], strict=True)
    return stored_columns([stored_vector(rows, rows_of(member_id, i, a, t)) for i, a, t in keys], height(candidates))
