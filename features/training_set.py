"""Point-in-time training rows from an event log, by replay.

Events are folded in time order; each impression's row holds the features as they stood just before
it (so nothing that happened later can leak in), the FPR score of the inventory it belongs to, and
whether the member engaged with that item afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from features.aggregates import apply_event, ctr, keys_for
from feedrank.contracts import ENGAGEMENT_TYPES, EventType, ItemType, MemberEvent
from rankers.fpr import Scorer
from rankers.inventory import Inventory


def build_training_set(events: Iterable[MemberEvent], scorers: Mapping[ItemType, Scorer]) -> pd.DataFrame:
    ordered = sorted(events, key=lambda e: e.timestamp)
    last_engaged: dict[tuple[str, str | None], float] = {}
    for e in ordered:
        if e.event_type in ENGAGEMENT_TYPES:
            last_engaged[(e.member_id, e.item_id)] = e.timestamp
    inv = Inventory()
    counts: dict[str, list[int]] = {}
    rows = []
    for e in ordered:
        if e.event_type == EventType.IMPRESSION:
            assert e.item_type is not None and e.item_id is not None
            scorer = scorers.get(e.item_type)
            known = e.item_id in inv.items or e.item_type == ItemType.MEMBER
            if scorer is not None and known:
                row: dict[str, object] = {
                    "member_id": e.member_id,
                    "item_id": e.item_id,
                    "item_type": e.item_type.value,
                    "actor_id": e.item_actor_id,
                    "timestamp": e.timestamp,
                    "fpr_score": scorer.score(inv, e.member_id, e.item_id, e.timestamp)[0],
                    "label": int(last_engaged.get((e.member_id, e.item_id), -1.0) >= e.timestamp),
                }
                if "true_p" in e.attributes:
                    row["true_p"] = float(e.attributes["true_p"])  # type: ignore[arg-type]
                for vk in keys_for(e):
                    imp, eng = counts.get(vk.encode()) or (0, 0)
                    row[f"{vk.view}__impressions"] = imp
                    row[f"{vk.view}__engagements"] = eng
                    row[f"{vk.view}__ctr"] = ctr(imp, eng)
                rows.append(row)
        inv.apply(e)
        apply_event(e, counts)
    return pd.DataFrame(rows)
