"""The feature service's working set: every feature row in numpy arrays, folded a micro-batch at a time.

:func:`features.families.fold` defines what one event does to one row; this module does the same to
many rows at once, and gives the same numbers (a test holds the two equal). A micro-batch of events
becomes (row, event) pairs; each row's reference time moves to the newest event time it has seen, its
sums decay once to that time, and every pair adds ``2^-((as_of - t) / h)``. Python touches each event
once (to find its rows); the arithmetic is vectorised.

Rows remember the last source offset they applied per partition, so events re-read after a crash are
skipped row by row. A row packs into a fixed-width float64 record: that record is the value of the
row's changelog message, and what recovery unpacks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.families import HALF_LIFE_S, SEP, VIEWS, View
from feedrank.contracts import ENGAGEMENT_TYPES, EventType, MemberEvent

W = 3  # window columns per row (views with fewer windows leave the rest unused)
IMPRESSION, ENGAGEMENT, HIDE = 0, 1, 2
VIEW_INDEX = {v.name: i for i, v in enumerate(VIEWS)}
_MEMBER_ITEM = VIEW_INDEX["member_item"]
_FIRST_IMPRESSIONS = np.array([v.first_impressions for v in VIEWS])
# Half-lives per view and window column; unused columns get inf (factor 1, never read).
_HALF_LIVES = np.array([[HALF_LIFE_S[w] for w in v.windows] + [np.inf] * (W - len(v.windows)) for v in VIEWS])


def event_kind(e: MemberEvent) -> int:
    """Which count an event adds to; -1 for events that update no feature row (posts, connects...)."""
    if e.event_type == EventType.IMPRESSION:
        return IMPRESSION
    if e.event_type in ENGAGEMENT_TYPES:
        return ENGAGEMENT
    if e.event_type == EventType.HIDE:
        return HIDE
    return -1


def row_keys(e: MemberEvent) -> tuple[str, ...]:
    """The event's row in every view, in VIEWS order (the same keys as ``families.rows_for``)."""
    m, i, a, t = e.member_id, e.item_id, e.item_actor_id, e.item_type.value  # type: ignore[union-attr]
    return (
        f"member_stats{SEP}{m}",
        f"item_stats{SEP}{i}",
        f"actor_stats{SEP}{a}",
        f"member_actor{SEP}{m}{SEP}{a}",
        f"member_type{SEP}{m}{SEP}{t}",
        f"member_actor_type{SEP}{m}{SEP}{a}{SEP}{t}",
        f"member_item{SEP}{m}{SEP}{i}",
    )


@dataclass(frozen=True)
class Changed:
    """A consistent copy of the rows one micro-batch changed, safe to write from another thread."""

    keys: list[str]
    view: np.ndarray  # (n,) view index
    as_of: np.ndarray  # (n,)
    imp: np.ndarray  # (n, W)
    eng: np.ndarray  # (n, W)
    counts: np.ndarray  # (n, 3): impressions, engagements, hides
    records: np.ndarray  # (n, record width): the packed changelog values

    def __len__(self) -> int:
        return len(self.keys)

    def select(self, view: View) -> tuple[np.ndarray, np.ndarray]:
        """Which of the rows are the view's, and their stored columns in ``view.stored`` order."""
        sel = np.flatnonzero(self.view == VIEW_INDEX[view.name])
        nw = len(view.windows)
        values = np.column_stack([self.imp[sel, :nw], self.eng[sel, :nw], self.counts[sel], self.as_of[sel]]).astype(
            np.float64, copy=False
        )
        return sel, values

    def view_batch(self, view: View) -> tuple[list[pa.Array], np.ndarray] | None:
        """The view's rows as ``FeastRedisLayout.encode_hsets`` takes them: join-key columns (split out of
        the row keys by Arrow, not row by row in Python) and stored values; None if it has none."""
        sel, values = self.select(view)
        if not len(sel):
            return None
        parts = pc.split_pattern(pa.array([self.keys[i] for i in sel], pa.string()), SEP)
        return [pc.list_element(parts, j + 1) for j in range(len(view.join_keys))], values

    def stored(self, view: View) -> tuple[list[str], np.ndarray]:
        """The keys of one view's rows and their stored columns, in ``view.stored`` order."""
        sel, values = self.select(view)
        return [self.keys[i] for i in sel], values


class RowState:
    """All rows, by slot; ``load`` is asked for rows not yet in memory (recovery from the changelog)."""

    def __init__(self, partitions: int, load: Callable[[str], bytes | None] | None = None, capacity: int = 1024):
        self.partitions = partitions
        self._load = load
        self.slot: dict[str, int] = {}
        self.keys: list[str] = []
        self.view = np.zeros(capacity, dtype=np.int8)
        self.as_of = np.zeros(capacity)
        self.imp = np.zeros((capacity, W))
        self.eng = np.zeros((capacity, W))
        self.counts = np.zeros((capacity, 3))
        self.offsets = np.full((capacity, partitions), -1, dtype=np.int64)

    # ------------------------------------------------------------------ slots
    def __len__(self) -> int:
        return len(self.keys)

    def _grow(self) -> None:
        cap = 2 * len(self.as_of)
        for name in ("view", "as_of", "imp", "eng", "counts"):
            old = getattr(self, name)
            new = np.zeros((cap, *old.shape[1:]), dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        offsets = np.full((cap, self.partitions), -1, dtype=np.int64)
        offsets[: len(self.offsets)] = self.offsets
        self.offsets = offsets

    def _add_rows(self, keys: list[str], views: list[int]) -> None:
        """Rows given slots (``len(self.keys)`` on) during a fold: arrays grown, recovered rows loaded."""
        start = len(self.keys)
        self.keys.extend(keys)
        while len(self.keys) > len(self.as_of):
            self._grow()
        self.view[start : len(self.keys)] = views
        if self._load is not None:
            for s, key in enumerate(keys, start):
                record = self._load(key)
                if record is not None:
                    self.unpack_into(s, record)

    # ------------------------------------------------------------------ records
    @property
    def record_width(self) -> int:
        return 1 + 2 * W + 3 + self.partitions

    def pack(self, slots: np.ndarray) -> np.ndarray:
        """One float64 record per row: as_of, imp, eng, counts, applied offsets (exact below 2^53)."""
        return np.column_stack(
            [self.as_of[slots], self.imp[slots], self.eng[slots], self.counts[slots], self.offsets[slots]]
        ).astype(np.float64)

    def unpack_into(self, s: int, record: bytes) -> None:
        r = np.frombuffer(record, dtype=np.float64)
        p = len(r) - (1 + 2 * W + 3)
        if p < 0:
            raise ValueError(f"a feature row record of {len(record)} bytes is too short")
        self.as_of[s] = r[0]
        self.imp[s] = r[1 : 1 + W]
        self.eng[s] = r[1 + W : 1 + 2 * W]
        self.counts[s] = r[1 + 2 * W : 4 + 2 * W]
        k = min(p, self.partitions)
        self.offsets[s, :k] = r[4 + 2 * W : 4 + 2 * W + k].astype(np.int64)

    # ------------------------------------------------------------------ folding
    def fold(self, batch: Sequence[tuple[MemberEvent, int, int]]) -> Changed | None:
        """Fold (event, partition, offset) triples; the rows that changed, or None if none did."""
        slots: list[int] = []
        times: list[float] = []
        kinds: list[int] = []
        parts: list[int] = []
        offs: list[int] = []
        slot, append = self.slot, slots.append
        get = slot.get
        new_keys: list[str] = []
        new_views: list[int] = []
        for e, part, off in batch:
            kind = event_kind(e)
            if kind < 0:
                continue
            if part >= self.partitions:
                raise ValueError(f"source partition {part} >= the {self.partitions} partitions configured")
            for v, key in enumerate(row_keys(e)):
                s = get(key)
                if s is None:  # a row not seen before: given its slot now, set up after the loop
                    s = slot[key] = len(self.keys) + len(new_keys)
                    new_keys.append(key)
                    new_views.append(v)
                append(s)
            times.append(e.timestamp)
            kinds.append(kind)
            parts.append(part)
            offs.append(off)
        if new_keys:
            self._add_rows(new_keys, new_views)
        if not slots:
            return None
        # Every applied event updates one row of each view: per-event columns repeat per row.
        n_views = len(VIEWS)
        r = np.asarray(slots, dtype=np.int64)
        part_a = np.repeat(np.asarray(parts, dtype=np.int64), n_views)
        off_a = np.repeat(np.asarray(offs, dtype=np.int64), n_views)
        t = np.repeat(np.asarray(times), n_views)
        kind_a = np.repeat(np.asarray(kinds, dtype=np.int64), n_views)
        fresh = off_a > self.offsets[r, part_a]  # not applied before (a replay after a crash is)
        counted = self._counted(r, kind_a, fresh)
        if not fresh.all():
            r, part_a, off_a, t, kind_a, counted = (x[fresh] for x in (r, part_a, off_a, t, kind_a, counted))
            if not len(r):
                return None
        np.maximum.at(self.offsets, (r, part_a), off_a)

        u, inv = np.unique(r, return_inverse=True)
        newest = np.full(len(u), -np.inf)
        np.maximum.at(newest, inv, t)
        old = self.as_of[u]
        new = np.maximum(old, newest)
        h = _HALF_LIVES[self.view[u]]  # (len(u), W)
        decay = np.where(old[:, None] > 0, 0.5 ** ((new - old)[:, None] / h), 0.0)
        self.imp[u] *= decay
        self.eng[u] *= decay
        self.as_of[u] = new
        add = 0.5 ** ((new[inv] - t)[:, None] / h[inv]) * counted[:, None]  # (pairs, W); 0 where not counted
        for kind, target in ((IMPRESSION, self.imp), (ENGAGEMENT, self.eng)):
            sel = kind_a == kind
            if sel.any():
                for k in range(W):
                    target[u, k] += np.bincount(inv[sel], weights=add[sel, k], minlength=len(u))
        for kind in (IMPRESSION, ENGAGEMENT, HIDE):
            self.counts[u, kind] += np.bincount(inv[kind_a == kind], minlength=len(u))
        return self._changed(u)

    def _counted(self, r: np.ndarray, kind_a: np.ndarray, fresh: np.ndarray) -> np.ndarray:
        """Per (row, event) pair, whether it adds to the row's windows: always, except in a
        ``first_impressions`` view, where only a member's first impression of the item counts, and
        engagements while they have seen it exactly once (``families.apply_event``, batched).

        The impressions before an event are its member_item row's count before the batch plus the
        batch's earlier fresh impressions of that row.
        """
        n_views = len(VIEWS)
        mi_slot, kind = r[_MEMBER_ITEM::n_views], kind_a[::n_views]
        imp = (fresh[_MEMBER_ITEM::n_views] & (kind == IMPRESSION)).astype(np.int64)
        order = np.argsort(mi_slot, kind="stable")
        g, f = mi_slot[order], imp[order]
        before = np.cumsum(f) - f  # fresh impressions before each event, over the whole sorted batch
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        before -= np.repeat(before[starts], np.diff(np.r_[starts, len(g)]))  # ... within its row
        shown = np.empty_like(before)
        shown[order] = before
        shown += self.counts[mi_slot, IMPRESSION].astype(np.int64)
        counted = np.ones((len(kind), n_views))  # pairs are event-major: one row per event, a column per view
        counted[:, _FIRST_IMPRESSIONS] = np.where(kind == IMPRESSION, shown == 0, shown == 1)[:, None]
        return counted.ravel()

    def restore(self, records: dict[str, bytes]) -> Changed | None:
        """Rows as the changelog last recorded them (key -> packed record): what rebuilding the online
        store from Kafka writes back."""
        keys = [k for k in records if k not in self.slot]
        start = len(self.keys)
        for i, k in enumerate(keys, start):
            self.slot[k] = i
        self._add_rows(keys, [VIEW_INDEX[k.split(SEP, 1)[0]] for k in keys])
        u = np.fromiter((self.slot[k] for k in records), dtype=np.int64, count=len(records))
        for s, record in zip(u.tolist(), records.values(), strict=True):
            self.unpack_into(s, record)
        return self._changed(u) if len(u) else None

    def _changed(self, u: np.ndarray) -> Changed:
        return Changed(
            keys=[self.keys[s] for s in u],
            view=self.view[u],
            as_of=self.as_of[u],
            imp=self.imp[u],
            eng=self.eng[u],
            counts=self.counts[u],
            records=self.pack(u),
        )

    def row(self, key: str) -> dict | None:
        """One row in ``families.fold``'s shape (None if never folded or recovered)."""
        s = self.slot.get(key)
        if s is None:
            return None
        nw = len(VIEWS[int(self.view[s])].windows)
        return {
            "as_of": float(self.as_of[s]),
            "imp": self.imp[s, :nw].tolist(),
            "eng": self.eng[s, :nw].tolist(),
            "n": [int(c) for c in self.counts[s]],
        }
