"""The feature families of X_it, as streaming aggregates: what each event updates, and what it means.

One definition serves the Faust service (which folds events into rows), the Feast repository (which
declares the views), training (which replays rows point-in-time) and serving (which reads them).

Counts are exponentially decayed sums with half-lives of 1 hour, 1 day and 7 days, kept at a
reference time ``as_of`` (the newest event time folded into the row). An increment at time t adds
``2^-((as_of - t) / h)``, so the sums do not depend on the order events arrive in (but for which of
a member's impressions of an item is the first, below), and a reader decays them to its own time
with one factor. Rates and velocities are derived at read time by :func:`derive`, the same function
for training and serving.

The item's windowed counts count first impressions only (``View.first_impressions``): a member's
first impression of the item, and the engagements that follow it before a second one, so its rate is
the engagement rate of a first impression. Counting every impression would let an item's rate fall
as it ages in the feed: the same members see it again and again, fatigued, and rarely engage, while
a new viewer engages as often as ever. (Counting each member's first engagement against their first
impression errs the other way: a viewer's later impressions are more chances to engage, so the rate
rises as the item's audience saturates.) Which impression an event follows is read from the
member_item row before the event folds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from feedrank.contracts import ENGAGEMENT_TYPES, EventType, MemberEvent

HALF_LIFE_S: dict[str, float] = {"1h": 3600.0, "1d": 86_400.0, "7d": 7 * 86_400.0}
PRIOR_CTR = 0.05
PRIOR_WEIGHT = 10.0
SEP = "|"


@dataclass(frozen=True)
class View:
    name: str
    join_keys: tuple[str, ...]
    family: str
    windows: tuple[str, ...]
    doc: str
    serve_totals: bool = False  # whether serving reads the lifetime totals (see ``served``)
    # Whether the windowed counts count only members' first impressions of the item and the engagements
    # right after them (see the module docstring); the lifetime totals count every event either way.
    first_impressions: bool = False

    @property
    def stored(self) -> list[str]:
        """Columns written to the online and offline stores (besides the join keys)."""
        return [
            *(f"imp_{w}" for w in self.windows),
            *(f"eng_{w}" for w in self.windows),
            "imp_total",
            "eng_total",
            "hide_total",
            "as_of",
        ]

    @property
    def served(self) -> list[str]:
        """The stored columns that :func:`derive` and the re-ranking rules read: a third fewer than
        ``stored`` (the lifetime totals matter only for the member's history with the very item), and
        the online read's cost grows with every field it fetches."""
        return [c for c in self.stored if self.serve_totals or not c.endswith("_total")]


VIEWS: tuple[View, ...] = (
    View("member_stats", ("member_id",), "X_i", ("1h", "1d", "7d"), "how much the member engages with the feed"),
    View(
        "item_stats",
        ("item_id",),
        "X_t",
        ("1h", "1d", "7d"),
        "the item's reach and velocity: members who saw it, and how often a first impression was engaged",
        first_impressions=True,
    ),
    View("actor_stats", ("actor_id",), "X_t", ("7d",), "the popularity of the item's creator"),
    View("member_actor", ("member_id", "actor_id"), "X_ij", ("7d",), "the member's affinity for the actor"),
    View("member_type", ("member_id", "item_type"), "X_ik", ("1d", "7d"), "the member's appetite for the type"),
    View(
        "member_actor_type",
        ("member_id", "actor_id", "item_type"),
        "X_ijk",
        ("7d",),
        "the member's history with this actor's items of this type",
    ),
    View(
        "member_item",
        ("member_id", "item_id"),
        "X_io",
        ("7d",),
        "the member's history with this very item: fatigue, past engagement, hides",
        serve_totals=True,
    ),
)
VIEW_BY_NAME = {v.name: v for v in VIEWS}
STORED_COLUMNS: list[str] = [f"{v.name}__{c}" for v in VIEWS for c in v.stored]
"""Every view's stored columns as one frame names them (``view__column``), in view then ``stored`` order."""


def _spans() -> dict[str, slice]:
    out, start = {}, 0
    for v in VIEWS:
        out[v.name] = slice(start, start + len(v.stored))
        start += len(v.stored)
    return out


STORED_SPAN: dict[str, slice] = _spans()
"""Where each view's columns lie in ``STORED_COLUMNS``."""


@dataclass(frozen=True)
class RowKey:
    """One row of one view: its name and entity values in join-key order."""

    view: str
    entities: tuple[str, ...]

    def encode(self) -> str:
        return SEP.join((self.view, *self.entities))

    @staticmethod
    def decode(raw: str) -> RowKey:
        view, *entities = raw.split(SEP)
        return RowKey(view, tuple(entities))


def rows_for(e: MemberEvent) -> list[RowKey]:
    """The rows an impression, engagement or hide updates; other events update none."""
    if e.event_type != EventType.IMPRESSION and e.event_type != EventType.HIDE and e.event_type not in ENGAGEMENT_TYPES:
        return []
    assert e.item_id is not None and e.item_type is not None and e.item_actor_id is not None
    return rows_of(e.member_id, e.item_id, e.item_actor_id, e.item_type.value)


def rows_of(m: str, i: str, a: str, t: str) -> list[RowKey]:
    """Every view's row for member ``m`` and item ``i`` (by actor ``a``, of type ``t``): what an
    impression updates, and what a read for that candidate returns."""
    return [
        RowKey("member_stats", (m,)),
        RowKey("item_stats", (i,)),
        RowKey("actor_stats", (a,)),
        RowKey("member_actor", (m, a)),
        RowKey("member_type", (m, t)),
        RowKey("member_actor_type", (m, a, t)),
        RowKey("member_item", (m, i)),
    ]


def _new_row(view: View) -> dict:
    return {"as_of": 0.0, "imp": [0.0] * len(view.windows), "eng": [0.0] * len(view.windows), "n": [0, 0, 0], "off": {}}


def fold(
    row: dict | None, view: View, e: MemberEvent, source: tuple[int, int] | None = None, first: bool = True
) -> dict | None:
    """The row after event ``e``; None if ``e`` was already folded into it (an idempotent replay).

    ``source`` is the event's (partition, offset): a row remembers the last offset it applied per
    partition, so re-reading events after a restart never counts them twice. ``first`` says whether
    ``e`` is the member's first impression of the item or an engagement right after it; a
    ``first_impressions`` view's windows count only those.
    """
    row = (
        _new_row(view)
        if row is None
        else {**row, "imp": list(row["imp"]), "eng": list(row["eng"]), "n": list(row["n"]), "off": dict(row["off"])}
    )
    if source is not None:
        part, offset = str(source[0]), source[1]
        if row["off"].get(part, -1) >= offset:
            return None
        row["off"][part] = offset
    t = e.timestamp
    if t > row["as_of"]:  # move the reference time forward, decaying what is there
        for k, w in enumerate(view.windows):
            f = 0.5 ** ((t - row["as_of"]) / HALF_LIFE_S[w]) if row["as_of"] else 0.0
            row["imp"][k] *= f
            row["eng"][k] *= f
        row["as_of"] = t
    et = e.event_type
    target, total = ("imp", 0) if et == EventType.IMPRESSION else ("eng", 1) if et in ENGAGEMENT_TYPES else (None, 2)
    if target is not None and (first or not view.first_impressions):
        for k, w in enumerate(view.windows):
            row[target][k] += 0.5 ** ((row["as_of"] - t) / HALF_LIFE_S[w])
    row["n"][total] += 1
    return row


def apply_event(e: MemberEvent, table: MutableMapping[str, dict], source: tuple[int, int] | None = None) -> list[str]:
    """Fold ``e`` into every row it updates; returns the keys that changed."""
    rows = rows_for(e)
    if not rows:
        return []
    pair = next(rk for rk in rows if rk.view == "member_item")
    history = table.get(pair.encode())  # before the event
    shown = history["n"][0] if history is not None else 0
    first = shown == (0 if e.event_type == EventType.IMPRESSION else 1)
    changed = []
    for rk in rows:
        key = rk.encode()
        new = fold(table.get(key), VIEW_BY_NAME[rk.view], e, source, first)
        if new is not None:
            table[key] = new
            changed.append(key)
    return changed


def recompute(events: Iterable[MemberEvent]) -> dict[str, dict]:
    table: dict[str, dict] = {}
    for e in events:
        apply_event(e, table)
    return table


def stored_values(row: Mapping) -> list[float]:
    """One table row's stored columns, in its view's ``stored`` order."""
    return [*map(float, row["imp"]), *map(float, row["eng"]), *map(float, row["n"]), float(row["as_of"])]


def stored_row(key: str, row: Mapping) -> tuple[str, dict]:
    """(view name, the columns the stores hold) for one table row."""
    rk = RowKey.decode(key)
    view = VIEW_BY_NAME[rk.view]
    out: dict[str, object] = dict(zip(view.join_keys, rk.entities, strict=True))
    out.update(zip(view.stored, stored_values(row), strict=True))
    return view.name, out


def stored_rows(keys: Iterable[str], table: Mapping[str, Mapping]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for key in keys:
        view, out = stored_row(key, table[key])
        rows.setdefault(view, []).append(out)
    return rows


def ctr(impressions, engagements):
    """Engagement rate smoothed toward a prior, so one lucky click is not a 100% CTR."""
    return (engagements + PRIOR_CTR * PRIOR_WEIGHT) / (impressions + PRIOR_WEIGHT)


Columns = Mapping[str, np.ndarray]
"""Named columns of equal length: the serving path's frame. Fetching a DataFrame column costs about
30 us and a feed's scoring fetches a few hundred, so the mixer passes plain arrays; training and
evaluation pass DataFrames, and every function here takes either."""


def as_columns(frame: pd.DataFrame | Columns) -> dict[str, np.ndarray]:
    if isinstance(frame, pd.DataFrame):
        return {str(c): frame[c].to_numpy() for c in frame.columns}
    return dict(frame)


def height(frame: pd.DataFrame | Columns) -> int:
    """Rows of a DataFrame or of named columns (all equal in length)."""
    if isinstance(frame, pd.DataFrame):
        return len(frame)
    return len(next(iter(frame.values()))) if frame else 0


def numeric(frame: pd.DataFrame | Columns, name: str, default: float = 0.0) -> np.ndarray:
    """Column ``name`` as floats, ``default`` where it is missing, unparsable or absent altogether."""
    if name not in frame:
        return np.full(height(frame), default)
    values = frame[name]
    if values.dtype.kind in "fiu":  # the common case (serving reads float64): no parsing
        v = np.asarray(values, dtype=float)
        return np.where(np.isnan(v), default, v)
    return pd.to_numeric(pd.Series(values), errors="coerce").fillna(default).to_numpy(dtype=float)


def derive_columns(stored: pd.DataFrame | Columns, now: pd.Series | np.ndarray | float) -> dict[str, np.ndarray]:
    """Model-ready features from stored columns named ``view__column``, decayed to time ``now``.

    Missing rows (no history) give zero counts and the prior CTR. Used by training and serving alike.
    """
    out: dict[str, np.ndarray] = {}
    n = height(stored)
    now_arr = np.broadcast_to(np.asarray(now, dtype=float), (n,))

    def col(name: str, default: float = 0.0) -> np.ndarray:
        return numeric(stored, name, default)

    imp_1h = np.zeros(n)
    for view in VIEWS:
        p = view.name
        age = np.maximum(0.0, now_arr - col(f"{p}__as_of", np.nan))
        for w in view.windows:
            factor = np.where(np.isnan(age), 0.0, 0.5 ** (np.nan_to_num(age) / HALF_LIFE_S[w]))
            imp, eng = col(f"{p}__imp_{w}") * factor, col(f"{p}__eng_{w}") * factor
            out[f"{p}__log_imp_{w}"] = np.log1p(imp)
            out[f"{p}__log_eng_{w}"] = np.log1p(eng)
            out[f"{p}__ctr_{w}"] = ctr(imp, eng)
            if p == "item_stats" and w == "1h":
                imp_1h = imp
            if p == "item_stats" and w == "1d":
                out["item_stats__velocity"] = np.log1p(imp_1h) - np.log1p(imp / 24.0)
    mi = "member_item"
    out[f"{mi}__log_seen"] = np.log1p(col(f"{mi}__imp_total"))
    out[f"{mi}__engaged_before"] = (col(f"{mi}__eng_total") > 0).astype(float)
    out[f"{mi}__hidden_before"] = (col(f"{mi}__hide_total") > 0).astype(float)
    return out


def derive(stored: pd.DataFrame, now: pd.Series | np.ndarray | float) -> pd.DataFrame:
    """:func:`derive_columns` as a DataFrame on ``stored``'s index."""
    return pd.DataFrame(derive_columns(stored, now), index=stored.index)


DERIVED_BY_FAMILY: dict[str, list[str]] = {}
for _v in VIEWS:
    cols = [f"{_v.name}__{k}_{w}" for w in _v.windows for k in ("log_imp", "log_eng", "ctr")]
    if _v.name == "item_stats":
        cols.append("item_stats__velocity")
    if _v.name == "member_item":
        cols += [f"{_v.name}__log_seen", f"{_v.name}__engaged_before", f"{_v.name}__hidden_before"]
    DERIVED_BY_FAMILY.setdefault(_v.family, []).extend(cols)
