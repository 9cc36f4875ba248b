"""Point-in-time training rows from an event log, by replay.

Events are folded in time order; each impression's row holds the feature rows as they stood just
before it (so nothing that happened later can leak in), derived at the impression's time exactly as
serving derives them, plus the FPR score of its inventory and whether the member engaged afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from features.families import VIEW_BY_NAME, apply_event, derive, rows_for, stored_row
from feedrank.contracts import ENGAGEMENT_TYPES, EventType, ItemType, MemberEvent
from rankers.fpr import Scorer
from rankers.inventory import Inventory


def stored_features(rows: Mapping[str, dict], e: MemberEvent) -> dict[str, object]:
    """The stored columns (``view__column``) of every row an impression would read, as they stand."""
    out: dict[str, object] = {}
    for rk in rows_for(e):
        key = rk.encode()
        if key in rows:
            view, cols = stored_row(key, rows[key])
            keys = VIEW_BY_NAME[view].join_keys
            out.update({f"{view}__{c}": v for c, v in cols.items() if c not in keys})
    return out


def build_training_set(events: Iterable[MemberEvent], scorers: Mapping[ItemType, Scorer]) -> pd.DataFrame:
    ordered = sorted(events, key=lambda e: e.timestamp)
    last_engaged: dict[tuple[str, str | None], float] = {}
    for e in ordered:
        if e.event_type in ENGAGEMENT_TYPES:
            last_engaged[(e.member_id, e.item_id)] = e.timestamp
    inv = Inventory()
    rows: dict[str, dict] = {}
    records: list[dict[str, object]] = []
    stored: list[dict[str, object]] = []
    for e in ordered:
        if e.event_type == EventType.IMPRESSION:
            assert e.item_type is not None and e.item_id is not None
            scorer = scorers.get(e.item_type)
            if scorer is not None and (e.item_id in inv.items or e.item_type == ItemType.MEMBER):
                record: dict[str, object] = {
                    "member_id": e.member_id,
                    "item_id": e.item_id,
                    "item_type": e.item_type.value,
                    "actor_id": e.item_actor_id,
                    "timestamp": e.timestamp,
                    "fpr_score": float(scorer.score(inv, e.member_id, [e.item_id], e.timestamp)[0][0]),
                    "label": int(last_engaged.get((e.member_id, e.item_id), -1.0) >= e.timestamp),
                }
                if "true_p" in e.attributes:
                    record["true_p"] = float(e.attributes["true_p"])  # type: ignore[arg-type]
                records.append(record)
                stored.append(stored_features(rows, e))
        inv.apply(e)
        apply_event(e, rows)
    base = pd.DataFrame(records)
    if base.empty:
        return base
    feats = derive(pd.DataFrame(stored, index=base.index), base["timestamp"].to_numpy())
    return pd.concat([base, feats], axis=1)
