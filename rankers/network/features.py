"""The network FPR's featurizer: one matrix of features per candidate list, for training and serving.

Training replays the logged traffic through the same ``Inventory`` the service folds and calls the
same ``transform`` at the moment each impression was served, so a model never sees features computed
differently from the ones it is served with. Per-actor work (tie strength, actor popularity, profile
similarity) is done once per distinct actor of the list, then broadcast to the actor's posts.

Topic interest needs more than exact skill overlap (a post has one topic skill; a member has five):
``SkillSpace`` places every skill at the industry mix of the members who list it, so that "this post
is about a skill people of my industry hold" is measurable for skills the member does not list. It is
fitted from member profiles (never from clicks) and travels inside the pickled scorer.

Engagement history enters as smoothed rates, never as all-time counts (an actor's or member's
impressions, a post's engagements, a member-actor pair's engagements): counts grow for as long as a
model serves, so a model trained on younger counts drifts. With them, the second pass under-predicted
network posts by about 5% more on later traffic (measured with ``benchmarks/bench_feed_quality``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from feedrank.contracts import CONNECTIONS, ItemType
from rankers.fpr import FeatureColumns
from rankers.inventory import Inventory, Item
from rankers.vectors import unit_rows

FEATURES: tuple[str, ...] = (
    "age_hours",
    "seen",
    "connections_only",
    "connected",
    "follows_actor",
    "common_connections",
    "actor_is_company",
    "actor_degree",
    "actor_followers",
    "actor_ctr",
    "item_ctr",
    "hours_since_engaged",
    "member_degree",
    "member_post_ctr",
    "skill_match",
    "author_skill_jaccard",
    "same_industry",
    "topic_similarity",
    "author_similarity",
    "history_topic_share",
    "history_similarity",
)
N_FEATURES = len(FEATURES)
_IDX = {name: i for i, name in enumerate(FEATURES)}

# Beta priors of the smoothed rates: a new item or actor starts at the network's typical post CTR.
PRIOR_CTR = 0.1
PRIOR_WEIGHT = 10.0
NEVER = -1.0  # hours_since_engaged of an item nobody engaged with (trees split it off)


def smoothed_rate(engagements: np.ndarray, impressions: np.ndarray) -> np.ndarray:
    """(e + w * prior) / (i + w): a few impressions barely move an item away from the prior."""
    return (engagements + PRIOR_WEIGHT * PRIOR_CTR) / (impressions + PRIOR_WEIGHT)


@dataclass
class SkillSpace:
    """Each skill as the (unit) industry mix of the members listing it; industries as unit axes."""

    industries: dict[str, int] = field(default_factory=dict)
    index: dict[str, int] = field(default_factory=dict)  # skill -> row of ``matrix``
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]

    @staticmethod
    def fit(inv: Inventory) -> SkillSpace:
        industries: dict[str, int] = {}
        for p in inv.members.values():
            if p.industry and p.industry not in industries:
                industries[p.industry] = len(industries)
        index: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        for p in inv.members.values():
            if p.industry:
                for s in p.skills:
                    rows.append(index.setdefault(s, len(index)))
                    cols.append(industries[p.industry])
        matrix = np.zeros((len(index), max(1, len(industries))))
        np.add.at(matrix, (np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)), 1.0)
        return SkillSpace(industries, index, unit_rows(matrix))

    def of_skill_sets(self, skill_sets: Sequence[Iterable[str]]) -> np.ndarray:
        """(n, dim): the sum of each set's known skills' vectors (a zero row when none is known)."""
        owners: list[int] = []
        rows: list[int] = []
        index = self.index
        for k, skills in enumerate(skill_sets):
            for s in skills:
                r = index.get(s)
                if r is not None:
                    owners.append(k)
                    rows.append(r)
        out = np.zeros((len(skill_sets), self.dim))
        if rows:
            # owners ascend, so each set's rows are contiguous: one reduceat sums them all
            counts = np.bincount(np.array(owners, dtype=np.int64), minlength=len(skill_sets))
            has = counts > 0
            starts = (np.cumsum(counts) - counts)[has]
            out[has] = np.add.reduceat(self.matrix[rows], starts, axis=0)
        return out

    def of_members(self, inv: Inventory, member_ids: Sequence[str]) -> np.ndarray:
        """(n, dim): each member's skills' mix plus their industry's axis, unit rows (zero when unknown)."""
        profiles = [inv.members.get(m) for m in member_ids]
        out = self.of_skill_sets([p.skills if p else () for p in profiles])
        counts = np.array([len(p.skills) if p else 0 for p in profiles], dtype=np.float64)
        out /= np.maximum(counts, 1.0)[:, None]
        for k, p in enumerate(profiles):
            j = self.industries.get(p.industry) if p else None
            if j is not None:
                out[k, j] += 1.0
        return unit_rows(out)


_ACTOR_COLS = (
    "connected",
    "follows_actor",
    "common_connections",
    "actor_is_company",
    "actor_degree",
    "actor_followers",
    "actor_ctr",
    "author_skill_jaccard",
    "same_industry",
)
_ACTOR_IDX = np.array([_IDX[c] for c in _ACTOR_COLS])


@dataclass
class NetworkFeaturizer:
    """Candidate posts to a (n, N_FEATURES) float matrix; finite everywhere (features go on the wire)."""

    skills: SkillSpace = field(default_factory=SkillSpace)

    @staticmethod
    def fit(inv: Inventory) -> NetworkFeaturizer:
        return NetworkFeaturizer(SkillSpace.fit(inv))

    def transform(self, inv: Inventory, member_id: str, item_ids: Sequence[str], now: float) -> np.ndarray:
        n = len(item_ids)
        x = np.zeros((n, N_FEATURES))
        if n == 0:
            return x
        get_item = inv.items.get
        items: list[Item | None] = [get_item(i) for i in item_ids]
        profile = inv.members.get(member_id)
        my_skills = profile.skills if profile else frozenset()
        seen = inv.seen.get(member_id, set())
        me = self.skills.of_members(inv, [member_id])[0]

        # per item: recency, popularity, visibility
        cols = np.array(
            [
                (it.created_at, it.engagements, it.impressions, it.last_engaged_at, it.visibility == CONNECTIONS)
                if it
                else (now, 0, 0, 0.0, False)
                for it in items
            ],
            dtype=np.float64,
        )
        eng, imp, last = cols[:, 1], cols[:, 2], cols[:, 3]
        x[:, _IDX["age_hours"]] = np.maximum(0.0, now - cols[:, 0]) / 3600.0
        x[:, _IDX["seen"]] = [i in seen for i in item_ids]
        x[:, _IDX["connections_only"]] = cols[:, 4]
        x[:, _IDX["item_ctr"]] = smoothed_rate(eng, imp)
        x[:, _IDX["hours_since_engaged"]] = np.where(last > 0, np.maximum(0.0, now - last) / 3600.0, NEVER)

        # topic: the post's skills against the member's profile and engagement history
        item_skills = [it.skills if it else frozenset() for it in items]
        x[:, _IDX["skill_match"]] = [len(sk & my_skills) / len(sk) if sk else 0.0 for sk in item_skills]
        topic = unit_rows(self.skills.of_skill_sets(item_skills))
        x[:, _IDX["topic_similarity"]] = topic @ me
        hist_skills = self._history(inv, member_id)
        total = sum(hist_skills.values())
        if total:
            x[:, _IDX["history_topic_share"]] = [
                sum(hist_skills[s] for s in sk) / total if sk else 0.0 for sk in item_skills
            ]
            hist_vec = unit_rows(self.skills.of_skill_sets([list(hist_skills.elements())]))[0]
            x[:, _IDX["history_similarity"]] = topic @ hist_vec

        # per actor, once each, then broadcast to the actor's posts
        row_of: dict[str, int] = {}
        actor_rows = np.array([row_of.setdefault(it.actor_id if it else "", len(row_of)) for it in items])
        actors = list(row_of)
        x[:, _ACTOR_IDX] = self._actors(inv, member_id, actors)[actor_rows]
        x[:, _IDX["author_similarity"]] = (self.skills.of_members(inv, actors) @ me)[actor_rows]

        # per member
        x[:, _IDX["member_degree"]] = len(inv.connections.get(member_id, ()))
        m_eng = inv.type_engagements.get(member_id, Counter()).get(ItemType.POST, 0)
        m_imp = inv.type_impressions.get(member_id, Counter()).get(ItemType.POST, 0)
        x[:, _IDX["member_post_ctr"]] = smoothed_rate(np.float64(m_eng), np.float64(m_imp))
        return x

    def columns(self, x: np.ndarray) -> FeatureColumns:
        """The matrix as named columns (what a scorer returns next to its scores)."""
        return {name: x[:, i] for i, name in enumerate(FEATURES)}

    @staticmethod
    def _history(inv: Inventory, member_id: str) -> Counter[str]:
        """Skills of the posts the member engaged with, each post counted once."""
        counts: Counter[str] = Counter()
        done: set[str] = set()
        for h in inv.history.get(member_id, ()):
            if h.item_type != ItemType.POST or h.item_id in done:
                continue
            done.add(h.item_id)
            it = inv.items.get(h.item_id)
            if it is not None:
                counts.update(it.skills)
        return counts

    @staticmethod
    def _actors(inv: Inventory, member_id: str, actors: list[str]) -> np.ndarray:
        """(len(actors), len(_ACTOR_COLS)): tie strength, actor popularity and profile overlap."""
        profile = inv.members.get(member_id)
        my_skills = profile.skills if profile else frozenset()
        my_industry = profile.industry if profile else ""
        my_conns = inv.connections.get(member_id, set())
        my_follows = inv.follows.get(member_id, set())
        out = []
        for a in actors:
            their_conns = inv.connections.get(a, set())
            prof = inv.members.get(a)
            a_eng = inv.actor_engagements.get(a, 0)
            a_imp = inv.actor_impressions.get(a, 0)
            their_skills = prof.skills if prof else frozenset()
            union = len(my_skills | their_skills)
            out.append(
                (
                    a in my_conns,
                    a in my_follows,
                    len(my_conns & their_conns) if my_conns and their_conns else 0,
                    prof is None and bool(a),
                    len(their_conns),
                    inv.followers.get(a, 0),
                    (a_eng + PRIOR_WEIGHT * PRIOR_CTR) / (a_imp + PRIOR_WEIGHT),
                    len(my_skills & their_skills) / union if union else 0.0,
                    bool(my_industry) and prof is not None and prof.industry == my_industry,
                )
            )
        return np.array(out, dtype=np.float64)
