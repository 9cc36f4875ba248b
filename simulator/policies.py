"""Logging policies over a batch of candidate sets, each with the exact propensity of what it showed.

The propensity of a logged row is the marginal probability that the policy puts *that* item at
*that* position for that request, which is what replay and IPS estimators need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _uniform_order(valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    keys = rng.random(valid.shape)
    keys[~valid] = np.inf
    return np.argsort(keys, axis=1, kind="stable")


def _finish(order: np.ndarray, valid: np.ndarray, slate_size: int) -> tuple[np.ndarray, np.ndarray]:
    n_valid = valid.sum(axis=1)
    slate = order[:, :slate_size].copy()
    slate[np.arange(slate_size)[None, :] >= n_valid[:, None]] = -1
    return slate, n_valid


@dataclass(frozen=True)
class UniformRandom:
    """A uniformly random ordered slate: every valid candidate is at each position w.p. 1/n."""

    name: str = "uniform"

    def choose(
        self, scores: np.ndarray | None, valid: np.ndarray, slate_size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        slate, n_valid = _finish(_uniform_order(valid, rng), valid, slate_size)
        prop = np.where(slate >= 0, 1.0 / np.maximum(n_valid, 1)[:, None], 0.0)
        return slate, prop


@dataclass(frozen=True)
class EpsilonGreedy:
    """The ranking's top slate w.p. 1 - epsilon, else a uniformly random one.

    P(item c at position k) = (1 - epsilon) * [ranking puts c at k] + epsilon / n_valid.
    The live system with exploration rate epsilon is this policy around the system's own scores.
    """

    epsilon: float = 0.1
    name: str = "epsilon-greedy"

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")

    def choose(
        self, scores: np.ndarray | None, valid: np.ndarray, slate_size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        if scores is None:
            raise ValueError("epsilon-greedy needs scores to rank by")
        ranked = np.where(valid, -scores, np.inf)
        greedy = np.argsort(ranked, axis=1, kind="stable")
        uniform = _uniform_order(valid, rng)
        explore = rng.random(len(valid)) < self.epsilon
        order = np.where(explore[:, None], uniform, greedy)
        slate, n_valid = _finish(order, valid, slate_size)
        greedy_slate, _ = _finish(greedy, valid, slate_size)
        on_greedy = (slate == greedy_slate) & (slate >= 0)
        prop = (1.0 - self.epsilon) * on_greedy + self.epsilon / np.maximum(n_valid, 1)[:, None]
        return slate, np.where(slate >= 0, prop, 0.0)
