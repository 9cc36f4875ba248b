"""Epsilon-greedy exploration, so the logs can evaluate and train other rankings than the one served.

With probability ``epsilon`` per request, the first ``pool`` unpinned slots (twice the feed size when
``pool`` is None: the feed and as much again from below the fold) are shuffled uniformly over the
positions they hold; pinned slots stay where they are. Each
slot's ``propensity`` is the exact probability that this policy puts it at the position it ends at:
``(1 - epsilon) * [the greedy order has it there] + epsilon / n`` for the n slots of the pool, 1 for
the others; off-policy estimators (inverse propensity scoring) divide by it. The coin and the shuffle
come from a generator seeded by the request id, so a request's feed can be reproduced and explained.
Runs after the other rules and before truncation: rules that run later would change the positions the
propensities refer to.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from rankers.rules.base import RerankContext, Slot


def request_rng(request_id: str, seed: int | None = None) -> np.random.Generator:
    """The request's generator: the same request id (and ``seed``, for a run that must draw afresh
    from the same ids, e.g. a simulated served log) gives the same draws in every process (a stable
    hash, not Python's salted ``hash()``)."""
    key = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "little")
    return np.random.default_rng(key if seed is None else [seed, key])


@dataclass
class Exploration:
    epsilon: float = 0.05
    pool: int | None = None
    name: str = "exploration"

    def __post_init__(self) -> None:
        eps = self.epsilon
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not (math.isfinite(eps) and 0 <= eps <= 1):
            raise ValueError(f"exploration.epsilon must be in [0, 1], got {eps!r}")
        if self.pool is not None and (isinstance(self.pool, bool) or not isinstance(self.pool, int) or self.pool < 1):
            raise ValueError(f"exploration.pool must be an integer >= 1 or unset, got {self.pool!r}")

    def pool_positions(self, slots: list[Slot], feed_size: int) -> list[int]:
        """The positions a shuffle may move: the first ``pool`` unpinned slots (2 x ``feed_size`` if unset)."""
        return [i for i, s in enumerate(slots) if not s.pinned][: self.pool or 2 * feed_size]

    def propensity(self, pool_size: int, greedy: bool) -> float:
        """P(a pool slot's item ends at a pool position): ``greedy`` when that is where the greedy order has it."""
        return (1.0 - self.epsilon if greedy else 0.0) + self.epsilon / pool_size

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        for s in slots:
            s.propensity = 1.0
        positions = self.pool_positions(slots, ctx.feed_size)
        n = len(positions)
        if n == 0:
            return list(slots)
        out = list(slots)
        rng = request_rng(ctx.request_id)
        if rng.random() < self.epsilon:
            for at, src in zip(positions, rng.permutation(n), strict=True):
                out[at] = slots[positions[src]]
        for at in positions:
            s = out[at]
            greedy = s is slots[at]
            s.propensity = self.propensity(n, greedy)
            if not greedy:
                s.moved_by.append(self.name)
        return out
