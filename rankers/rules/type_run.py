"""No more than ``max_run`` items of one type in a row: a feed of six jobs in a row feels like spam.

``break_score_ratio`` makes the rule soft: a run is broken only by an item scoring at least that share
of the item it displaces (0: always), so a member whose best items are all of one type is not handed
much worse ones for variety's sake."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from rankers.rules.base import RerankContext, Slot


@dataclass
class MaxTypeRun:
    max_run: int = 2
    break_score_ratio: float = 0.0
    name: str = "max_type_run"

    def __post_init__(self) -> None:
        if self.max_run < 1:
            raise ValueError(f"max_type_run.max_run must be >= 1, got {self.max_run}")
        if not 0.0 <= self.break_score_ratio <= 1.0:
            raise ValueError(f"max_type_run.break_score_ratio must be in [0, 1], got {self.break_score_ratio}")

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        pending = list(slots)
        left = Counter(s.item_type for s in pending)
        out: list[Slot] = []
        run_type, run_len = None, 0
        while pending:
            pick = 0
            # A full run and the best remaining slot would extend it: take the best slot of another type
            # instead, if any is left (if none is, the feed has nothing else to offer) and good enough.
            if run_len >= self.max_run and pending[0].item_type == run_type and left[run_type] < len(pending):
                other = next(i for i, s in enumerate(pending) if s.item_type != run_type)
                if pending[other].score >= self.break_score_ratio * pending[0].score:
                    pick = other
            chosen = pending.pop(pick)
            left[chosen.item_type] -= 1
            if pick:
                chosen.moved_by.append(self.name)
            out.append(chosen)
            run_len = run_len + 1 if chosen.item_type == run_type else 1
            run_type = chosen.item_type
        return out
