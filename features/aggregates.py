"""Which counters each event moves, and how counters become feature-view rows. Pure logic.

The same functions run in the Faust agent (over changelog-backed tables) and in batch recomputation
(over a dict), which is what lets tests prove the online store equals a recomputation.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass

from feedrank.contracts import ENGAGEMENT_TYPES, EventType, MemberEvent

SEP = "|"


@dataclass(frozen=True)
class ViewKey:
    """A row of one feature view: the view's name and its entity values in join-key order."""

    view: str
    entities: tuple[str, ...]

    def encode(self) -> str:
        return SEP.join((self.view, *self.entities))

    @staticmethod
    def decode(raw: str) -> ViewKey:
        view, *entities = raw.split(SEP)
        return ViewKey(view, tuple(entities))


# View name -> its join keys, in the order ViewKey.entities holds them.
JOIN_KEYS: dict[str, tuple[str, ...]] = {
    "member_activity": ("member_id",),
    "item_popularity": ("item_id",),
    "member_actor": ("member_id", "actor_id"),
    "member_type": ("member_id", "item_type"),
}


def keys_for(e: MemberEvent) -> list[ViewKey]:
    """The feature rows an impression or engagement updates; other events update none."""
    if e.event_type != EventType.IMPRESSION and e.event_type not in ENGAGEMENT_TYPES:
        return []
    assert e.item_id is not None and e.item_type is not None and e.item_actor_id is not None
    return [
        ViewKey("member_activity", (e.member_id,)),
        ViewKey("item_popularity", (e.item_id,)),
        ViewKey("member_actor", (e.member_id, e.item_actor_id)),
        ViewKey("member_type", (e.member_id, e.item_type.value)),
    ]


def apply_event(e: MemberEvent, counts: MutableMapping[str, list[int]]) -> list[str]:
    """Add one event to ``counts`` ([impressions, engagements] per row key); return the keys it changed.

    Values are replaced rather than mutated so that a Faust table records each change in its changelog.
    """
    is_impression = e.event_type == EventType.IMPRESSION
    changed = []
    for vk in keys_for(e):
        key = vk.encode()
        imp, eng = counts.get(key) or (0, 0)
        counts[key] = [imp + 1, eng] if is_impression else [imp, eng + 1]
        changed.append(key)
    return changed


def recompute(events: Iterable[MemberEvent]) -> dict[str, list[int]]:
    counts: dict[str, list[int]] = {}
    for e in events:
        apply_event(e, counts)
    return counts


def ctr(impressions: int, engagements: int, prior_ctr: float = 0.05, prior_weight: float = 10.0) -> float:
    """Engagement rate smoothed toward a prior, so one lucky click is not a 100% CTR."""
    return (engagements + prior_ctr * prior_weight) / (impressions + prior_weight)


def feature_rows(keys: Iterable[str], counts: MutableMapping[str, list[int]]) -> dict[str, list[dict]]:
    """Rows per feature view, ready for Feast's ``write_to_online_store`` (timestamps added by caller)."""
    rows: dict[str, list[dict]] = {}
    for key in keys:
        vk = ViewKey.decode(key)
        imp, eng = counts[key]
        row = dict(zip(JOIN_KEYS[vk.view], vk.entities, strict=True))
        row.update(impressions=imp, engagements=eng, ctr=ctr(imp, eng))
        rows.setdefault(vk.view, []).append(row)
    return rows
