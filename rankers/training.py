"""What every FPR trainer gets: the network's events and the logged traffic, and a point-in-time replay.

Trainers compute features through the same ``Inventory`` the service folds, at the moment each logged
impression was served: ``replay`` folds every event strictly earlier than a chunk of log rows before
handing that chunk over, so no feature sees the click it is asked to predict. Pure logic: loading
files or running the simulator is the caller's job (``services/fpr_training.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from feedrank.contracts import MemberEvent
from rankers.fpr import TRAINED_UNTIL, Scorer
from rankers.inventory import Inventory


class Progress(Protocol):
    """What trainers report to (rich's Progress fits; ``NoProgress`` for tests)."""

    def add_task(self, description: str, total: float | None = None, **kw: Any) -> Any: ...

    def update(self, task: Any, advance: float | None = None, **kw: Any) -> None: ...


class NoProgress:
    def add_task(self, description: str, total: float | None = None, **kw: Any) -> int:
        return 0

    def update(self, task: Any, advance: float | None = None, **kw: Any) -> None:
        return None


@dataclass
class LoggedTraffic:
    """Member events (the world's data included) and impression rows, both in time order.

    ``log`` follows the logged-traffic format (``simulator/logs.py``): at least ``request_id``,
    ``member_id``, ``timestamp``, ``position``, ``item_id``, ``item_type``, ``source``, ``clicked``.
    """

    events: Sequence[MemberEvent]
    log: pd.DataFrame
    description: str = ""

    def __post_init__(self) -> None:
        if not all(self.events[i].timestamp <= self.events[i + 1].timestamp for i in range(len(self.events) - 1)):
            self.events = sorted(self.events, key=lambda e: e.timestamp)
        self.log = self.log.sort_values("timestamp", kind="stable").reset_index(drop=True)

    def rows(self, item_type: str) -> pd.DataFrame:
        return self.log[self.log["item_type"] == item_type].reset_index(drop=True)

    def split_time(self, frac: float) -> float:
        """The time before which ``frac`` of the log's rows were served."""
        return float(np.quantile(self.log["timestamp"].to_numpy(), frac)) if len(self.log) else 0.0

    def before(self, t: float) -> LoggedTraffic:
        """The part a trainer may see at time ``t``: everything strictly before it."""
        events = [e for e in self.events if e.timestamp < t]
        return LoggedTraffic(events, self.log[self.log["timestamp"] < t], self.description)

    def first(self, frac: float) -> LoggedTraffic:
        """The traffic before ``frac`` of its log's rows (all of it for ``frac`` >= 1)."""
        if not 0 < frac <= 1:
            raise ValueError(f"a share of the traffic must be in (0, 1], got {frac}")
        return self if frac >= 1 else self.before(self.split_time(frac))


@dataclass
class TrainedFpr:
    """A trainer's result: a picklable scorer (saved as the versioned artifact) and its held-out metrics."""

    scorer: Scorer
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def stamp(self, traffic: LoggedTraffic) -> TrainedFpr:
        """Record on the scorer (and so in its artifact) where its training traffic ends: the mixer's
        second pass tells items created after it, which the model never saw, from the rest."""
        if traffic.events:
            setattr(self.scorer, TRAINED_UNTIL, float(traffic.events[-1].timestamp))
        return self


Trainer = Callable[[LoggedTraffic, dict[str, Any], Progress], TrainedFpr]


def replay(
    events: Sequence[MemberEvent],
    rows: pd.DataFrame,
    on_chunk: Callable[[Inventory, pd.DataFrame], None],
    chunk_seconds: float = 600.0,
    until: float | None = None,
    progress: Progress | None = None,
    inventory: Inventory | None = None,
) -> Inventory:
    """Fold ``events`` (time-ordered) and hand each ``chunk_seconds`` window of ``rows`` (time-ordered) to
    ``on_chunk`` with the inventory as it stood at the window's start. Folds the rest of the events up to
    ``until`` (all of them by default) and returns the inventory."""
    inv = inventory or Inventory()
    i, n = 0, len(events)
    ts = rows["timestamp"].to_numpy(dtype=np.float64) if len(rows) else np.empty(0)
    task = progress.add_task("replaying traffic", total=len(rows)) if progress else None
    start = 0
    while start < len(ts):
        t0 = ts[start]
        end = int(np.searchsorted(ts, t0 + chunk_seconds, side="left"))
        end = max(end, start + 1)
        while i < n and events[i].timestamp < t0:
            inv.apply(events[i])
            i += 1
        on_chunk(inv, rows.iloc[start:end])
        if progress is not None:
            progress.update(task, advance=end - start)
        start = end
    stop = float("inf") if until is None else until
    while i < n and events[i].timestamp < stop:
        inv.apply(events[i])
        i += 1
    return inv
