"""The ground truth: the probability of every action, for a member, an item, a position and a time.

A position-based model: P(click) = examination(position) x relevance, where relevance is a logistic
function of latent affinity, tie strength with the item's actor, recency, popularity and fatigue from
earlier impressions of the same item. Other actions follow a click with type-specific rates; hides
come from low affinity. Rankers never read this; it is logged as ``true_p`` for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.world import COURSE, JOB, MEMBER, POST, World

ACTIONS = ["clicked", "liked", "commented", "shared", "applied", "enrolled", "connected", "hidden"]


@dataclass(frozen=True)
class TruthParams:
    base: tuple[float, float, float, float] = (-3.7, -3.2, -3.0, -3.4)  # post, job, course, member
    w_affinity: float = 3.0
    w_tie: float = 1.0
    w_recency: float = 0.8
    w_popularity: float = 0.6
    w_fatigue: float = 0.7
    w_seniority_gap: float = 0.35  # jobs: each level away from the member's seniority
    position_decay: float = 0.7  # examination(pos) = (1 + pos) ** -position_decay
    post_half_life_h: float = 24.0
    job_half_life_h: float = 24.0 * 7
    # P(action | click), by item type (post, job, course, member)
    like_given_click: float = 0.35
    comment_given_click: float = 0.08
    share_given_click: float = 0.04
    apply_given_click: float = 0.3
    enroll_given_click: float = 0.25
    connect_given_click: float = 0.5
    hide_base: float = -5.0
    hide_w_affinity: float = 3.0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class GroundTruth:
    def __init__(self, world: World, params: TruthParams | None = None) -> None:
        self.world = world
        self.params = params or TruthParams()

    def examination(self, position: np.ndarray) -> np.ndarray:
        return (1.0 + position) ** -self.params.position_decay

    def relevance(
        self, member: np.ndarray, item: np.ndarray, t: np.ndarray, prior_impressions: np.ndarray | None = None
    ) -> np.ndarray:
        """P(click | examined): what an oracle ranks by, since examination only falls with position."""
        w, p = self.world, self.params
        itype = w.item_type[item]
        affinity = np.einsum("ij,ij->i", w.latent[member], w.item_latent[item])
        actor = w.item_actor[item]
        is_member_actor = actor < w.n_members
        tie = np.where(is_member_actor, w.connected(member, np.where(is_member_actor, actor, 0)), False)
        tie = tie.astype(np.float64)
        age_h = np.maximum(0.0, t - w.item_created[item]) / 3600.0
        recency = np.select(
            [itype == POST, itype == JOB],
            [0.5 ** (age_h / p.post_half_life_h), 0.5 ** (age_h / p.job_half_life_h)],
            0.0,
        )
        sen_gap = np.where(itype == JOB, np.abs(w.item_seniority[item] - w.seniority[member]), 0)
        logit = (
            np.asarray(p.base)[itype]
            + p.w_affinity * affinity
            + p.w_tie * tie
            + p.w_recency * recency
            + p.w_popularity * w.item_popularity[item]
            - p.w_seniority_gap * sen_gap
        )
        if prior_impressions is not None:
            logit = logit - p.w_fatigue * np.log1p(prior_impressions)
        return _sigmoid(logit)

    def action_probs(
        self,
        member: np.ndarray,
        item: np.ndarray,
        position: np.ndarray,
        t: np.ndarray,
        prior_impressions: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Marginal probability of each action for each (member, item, position, time)."""
        p = self.params
        itype = self.world.item_type[item]
        click = self.examination(position) * self.relevance(member, item, t, prior_impressions)
        zero = np.zeros_like(click)
        affinity = np.einsum("ij,ij->i", self.world.latent[member], self.world.item_latent[item])
        return {
            "clicked": click,
            "liked": np.where(itype == POST, click * p.like_given_click, zero),
            "commented": np.where(itype == POST, click * p.comment_given_click, zero),
            "shared": np.where(itype == POST, click * p.share_given_click, zero),
            "applied": np.where(itype == JOB, click * p.apply_given_click, zero),
            "enrolled": np.where(itype == COURSE, click * p.enroll_given_click, zero),
            "connected": np.where(itype == MEMBER, click * p.connect_given_click, zero),
            "hidden": (1.0 - click) * self.examination(position) * _sigmoid(p.hide_base - p.hide_w_affinity * affinity),
        }

    def sample(self, probs: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draw actions consistently: follow-ups only after a click, a hide only without one."""
        click_p = probs["clicked"]
        clicked = rng.random(len(click_p)) < click_p
        out = {"clicked": clicked}
        safe = np.where(click_p > 0, click_p, 1.0)
        for a in ("liked", "commented", "shared", "applied", "enrolled", "connected"):
            out[a] = clicked & (rng.random(len(click_p)) < probs[a] / safe)
        no_click = np.where(click_p < 1, 1.0 - click_p, 1.0)
        out["hidden"] = ~clicked & (rng.random(len(click_p)) < probs["hidden"] / no_click)
        return out


def oracle_order(relevance: np.ndarray) -> np.ndarray:
    """The best ranking of a candidate set: by relevance, since examination decreases with position."""
    return np.argsort(-relevance, kind="stable")


def expected_clicks(relevance: np.ndarray, order: np.ndarray, examination: np.ndarray) -> float:
    """Expected clicks on the first ``len(examination)`` slots when candidates are shown in ``order``."""
    k = min(len(examination), len(order))
    return float((examination[:k] * relevance[order[:k]]).sum())


def oracle_ratio(relevance: np.ndarray, order: np.ndarray, examination: np.ndarray) -> float:
    """A ranking's expected clicks as a share of the oracle's (1.0 is the best achievable)."""
    best = expected_clicks(relevance, oracle_order(relevance), examination)
    return expected_clicks(relevance, order, examination) / best if best > 0 else 1.0


def ndcg_against_oracle(relevance: np.ndarray, order: np.ndarray, k: int) -> float:
    """NDCG@k with the true relevance as the gain and the oracle's ranking as the ideal."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = relevance[oracle_order(relevance)[:k]]
    got = relevance[order[:k]]
    best = float((ideal * discounts[: len(ideal)]).sum())
    return float((got * discounts[: len(got)]).sum()) / best if best > 0 else 1.0
