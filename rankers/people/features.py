"""Features of (member, candidate member) pairs, for a whole candidate list at once.

One function computes them for training (on the inventory replayed to each logged impression) and for
serving (on the live inventory), so offline and online features cannot drift apart. Graph features
come from one pass over the member's friends (not one set intersection per candidate); LINE
similarities are one matrix-vector product over a precomputed, unit-norm embedding matrix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rankers.inventory import Inventory

FEATURES = [
    "adamic_adar",
    "common_connections",
    "common_companies",
    "line_first",
    "line_second",
    "skill_jaccard",
    "same_industry",
    "same_location",
    "seniority_gap",
    "log_candidate_degree",
    "log_member_degree",
    "industry_affinity",
    "seen",
]
SENIORITY_LEVEL = {"intern": 0, "junior": 1, "mid": 2, "senior": 3, "lead": 4}


@dataclass
class MemberEmbeddings:
    """LINE vectors by member id. Row ``len(ids)`` is all zeros: unknown members are "no similarity".

    ``neighbours`` holds each member's nearest members (rows, -1 padded) in the concatenated
    first+second-order space, precomputed so the candidate source does no nearest-neighbour search.
    """

    ids: list[str]
    first: np.ndarray
    second: np.ndarray
    neighbours: np.ndarray
    row: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.row = {m: i for i, m in enumerate(self.ids)}

    @staticmethod
    def of(ids: Sequence[str], first: np.ndarray, second: np.ndarray, neighbours: np.ndarray) -> MemberEmbeddings:
        """Appends the zero row for unknown members to unit-norm ``(n, d)`` matrices."""
        pad = [np.vstack([m.astype(np.float32), np.zeros((1, m.shape[1]), np.float32)]) for m in (first, second)]
        return MemberEmbeddings(list(ids), pad[0], pad[1], neighbours.astype(np.int32))

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        unknown, get = len(self.ids), self.row.get
        return np.fromiter((get(i, unknown) for i in ids), dtype=np.intp, count=len(ids))

    def similar(self, member_id: str, k: int) -> list[str]:
        r = self.row.get(member_id)
        if r is None or k <= 0:
            return []
        ids = self.ids
        return [ids[j] for j in self.neighbours[r, :k] if j >= 0]


@dataclass
class IndustryAffinity:
    """Smoothed click log-odds of member cards by (industry, industry) pair, relative to all cards.

    Same-industry is the strongest single signal, but industries are not equally far apart: some
    pairs click like neighbours, others like strangers. The graph cannot tell (cross-industry edges
    are drawn at random), only the logged clicks can. Pairs are unordered (affinity is mutual), and
    unseen pairs or missing industries read 0 ("like an average card").
    """

    table: dict[tuple[str, str], float]

    @staticmethod
    def fit(a: Sequence[str], b: Sequence[str], clicked: np.ndarray, prior: float = 30.0) -> IndustryAffinity:
        y = np.asarray(clicked, dtype=np.float64)
        p0 = float(np.clip(y.mean(), 1e-4, 1 - 1e-4)) if len(y) else 0.5
        clicks: dict[tuple[str, str], float] = {}
        shown: dict[tuple[str, str], int] = {}
        for x, z, c in zip(a, b, y.tolist(), strict=True):
            if x and z:
                key = (x, z) if x <= z else (z, x)
                clicks[key] = clicks.get(key, 0.0) + c
                shown[key] = shown.get(key, 0) + 1
        base = math.log(p0 / (1 - p0))
        table = {}
        for key, n in shown.items():
            ctr = (clicks[key] + prior * p0) / (n + prior)
            table[key] = math.log(ctr / (1 - ctr)) - base
        return IndustryAffinity(table)

    def get(self, x: str | None, z: str) -> float:
        if not x or not z:
            return 0.0
        return self.table.get((x, z) if x <= z else (z, x), 0.0)


def companies(inv: Inventory, member_id: str) -> set[str]:
    """What the member follows that is not a member: companies (the data has no schools)."""
    members = inv.members
    return {f for f in inv.follows.get(member_id, ()) if f not in members}


def people_features(
    inv: Inventory,
    member_id: str,
    item_ids: Sequence[str],
    emb: MemberEmbeddings | None,
    affinity: IndustryAffinity | None = None,
) -> dict[str, np.ndarray]:
    """One float array per name in ``FEATURES``, aligned with ``item_ids``. Reads, never mutates, ``inv``."""
    n = len(item_ids)
    conn = inv.connections
    mine = conn.get(member_id, ())
    # Common connections and Adamic-Adar in one pass over the member's friends' connections.
    cn: dict[str, int] = {}
    aa: dict[str, float] = {}
    for z in mine:
        nz = conn.get(z, ())
        if not nz:
            continue
        w = 1.0 / math.log(max(2, len(nz)))
        for c in nz:
            cn[c] = cn.get(c, 0) + 1
            aa[c] = aa.get(c, 0.0) + w
    members, follows = inv.members, inv.follows
    me = members.get(member_id)
    my_cos = companies(inv, member_id)
    my_skills = me.skills if me else frozenset()
    my_ind = me.industry if me and me.industry else None
    my_loc = me.location if me and me.location else None
    my_sen = SENIORITY_LEVEL.get(me.seniority) if me else None

    # Filled as lists (setting a list item is several times cheaper than setting a numpy element),
    # stacked into one array after: common companies, skill Jaccard, same industry, same location,
    # seniority gap, candidate degree, industry affinity, seen before.
    cols: list[list[float]] = [[0.0] * n for _ in range(8)]
    co, sk, ind, loc, sen, deg, aff, was_seen = cols
    seen = inv.seen.get(member_id, ())
    for j, c in enumerate(item_ids):
        if c in seen:
            was_seen[j] = 1.0
        nb = conn.get(c)
        deg[j] = len(nb) if nb else 0
        if my_cos:
            fc = follows.get(c)
            if fc:
                co[j] = len(my_cos & fc)
        p = members.get(c)
        if p is None:
            continue
        if my_skills and p.skills:
            sk[j] = len(my_skills & p.skills) / len(my_skills | p.skills)
        ind[j] = my_ind is not None and p.industry == my_ind
        if affinity is not None:
            aff[j] = affinity.get(my_ind, p.industry)
        loc[j] = my_loc is not None and p.location == my_loc
        s = SENIORITY_LEVEL.get(p.seniority)
        if my_sen is not None and s is not None:
            sen[j] = abs(s - my_sen)
    out = np.array(cols, dtype=np.float64)
    if emb is not None:
        rows = emb.rows(item_ids)
        me_row = emb.row.get(member_id, len(emb.ids))
        line1 = emb.first[rows] @ emb.first[me_row]
        line2 = emb.second[rows] @ emb.second[me_row]
    else:
        line1 = line2 = np.zeros(n)
    return {
        "adamic_adar": np.fromiter((aa.get(c, 0.0) for c in item_ids), dtype=np.float64, count=n),
        "common_connections": np.fromiter((cn.get(c, 0) for c in item_ids), dtype=np.float64, count=n),
        "common_companies": out[0],
        "line_first": np.asarray(line1, dtype=np.float64),
        "line_second": np.asarray(line2, dtype=np.float64),
        "skill_jaccard": out[1],
        "same_industry": out[2],
        "same_location": out[3],
        "seniority_gap": out[4],
        "log_candidate_degree": np.log1p(out[5]),
        "log_member_degree": np.full(n, math.log1p(len(mine))),
        "industry_affinity": out[6],
        "seen": out[7],
    }


def matrix(feats: dict[str, np.ndarray]) -> np.ndarray:
    """Features as the model's (n, len(FEATURES)) input, in ``FEATURES`` order."""
    return np.column_stack([feats[f] for f in FEATURES])
