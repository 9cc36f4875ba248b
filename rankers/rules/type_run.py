"""No more than ``max_run`` items of one type in a row: a feed of six jobs in a row feels like spam."""

from __future__ import annotations

from dataclasses import dataclass

from rankers.rules.base import RerankContext, Slot


@dataclass
class MaxTypeRun:
    max_run: int = 2
    name: str = "max_type_run"

    def __post_init__(self) -> None:
        if self.max_run < 1:
            raise ValueError(f"max_type_run.max_run must be >= 1, got {self.max_run}")

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        pending = list(slots)
        out: list[Slot] = []
        while pending:
            run_type = out[-1].item_type if len(out) >= self.max_run else None
            if run_type is not None and any(s.item_type != run_type for s in out[-self.max_run :]):
                run_type = None
            # Best remaining slot that does not extend a full run; if every one would, the feed
            # has nothing else to offer and the best slot goes next anyway.
            pick = next((i for i, s in enumerate(pending) if s.item_type != run_type), 0)
            chosen = pending.pop(pick)
            if pick:
                chosen.moved_by.append(self.name)
            out.append(chosen)
        return out
