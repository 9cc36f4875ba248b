"""Duplicate member events: the same ``event_id`` published twice (a producer's retry without
idempotence, a replayed upstream batch) would count an impression or a click twice.

A re-read of the same record after a crash is not a duplicate: it has the same partition and offset,
and rows already skip offsets they applied (``RowState``). A duplicate is a second record, at another
offset of the same partition (events are keyed by member, so a re-sent event lands on the first one's
partition), within the last ``window`` records of that partition read by this worker.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class DuplicateEvents:
    def __init__(self, window: int = 100_000) -> None:
        self.window = window
        self._first: dict[int, dict[str, int]] = {}  # partition -> event_id -> offset of its first record
        self._order: dict[int, deque[tuple[int, str]]] = {}  # partition -> (offset, event_id), oldest first

    def first_offsets(self, records: Iterable[tuple[str, int, int]]) -> list[int | None]:
        """Per (event_id, partition, offset), the offset of the earlier record it duplicates, or None."""
        out: list[int | None] = []
        for eid, p, o in records:
            first = self._first.get(p)
            if first is None:
                first = self._first[p] = {}
                self._order[p] = deque()
            seen = first.get(eid)
            if seen is not None and seen != o:
                out.append(seen)
                continue
            out.append(None)
            if seen is None:
                first[eid] = o
                order = self._order[p]
                order.append((o, eid))
                if len(order) > self.window:
                    old_offset, old_id = order.popleft()
                    if first.get(old_id) == old_offset:
                        del first[old_id]
        return out
