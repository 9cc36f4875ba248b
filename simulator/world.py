"""The world: members, companies, a social graph, and the inventories a feed draws from.

Everything is a numpy array indexed by integer ids; string ids (``m12``, ``p7``...) are made only on
output. Generation is vectorised so a million members take seconds, not hours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.config import WorldConfig

SENIORITY = np.array(["intern", "junior", "mid", "senior", "lead"])
ROLES = np.array(["engineer", "analyst", "manager", "specialist", "consultant", "designer"])
DIFFICULTY = np.array(["beginner", "intermediate", "advanced"])
# Item types, in the order of the global item index (see World.item_offsets).
POST, JOB, COURSE, MEMBER = 0, 1, 2, 3
ITEM_TYPE_NAMES = np.array(["post", "job", "course", "member"])
SOURCE_NAMES = np.array(["network", "jobs", "courses", "people"])
DAY = 86_400.0


@dataclass
class Csr:
    """Adjacency lists: neighbours of node i are ``indices[indptr[i]:indptr[i+1]]``."""

    indptr: np.ndarray
    indices: np.ndarray

    @staticmethod
    def from_pairs(src: np.ndarray, dst: np.ndarray, n: int) -> Csr:
        order = np.argsort(src, kind="stable")
        counts = np.bincount(src, minlength=n)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return Csr(indptr, dst[order].astype(np.int64))

    def degree(self) -> np.ndarray:
        return np.diff(self.indptr)

    def random_neighbour(self, nodes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniformly random neighbour per node; -1 where the node has none."""
        deg = self.indptr[nodes + 1] - self.indptr[nodes]
        pick = self.indptr[nodes] + (rng.random(len(nodes)) * deg).astype(np.int64)
        out = np.full(len(nodes), -1, dtype=np.int64)
        has = deg > 0
        out[has] = self.indices[pick[has]]
        return out


@dataclass
class World:
    config: WorldConfig
    # members
    industry: np.ndarray  # (n,) int
    seniority: np.ndarray  # (n,) int
    location: np.ndarray  # (n,) int
    skills: np.ndarray  # (n, skills_per_member) int
    latent: np.ndarray  # (n, d) float32, unit norm
    activity: np.ndarray  # (n,) relative rate of requesting feeds
    # graph
    edges: np.ndarray  # (E, 2) int64, u < v, unique
    graph: Csr
    edge_keys: np.ndarray  # sorted u * n + v for both directions, for membership tests
    follows_company: np.ndarray  # (F, 2) member, company
    follows_member: np.ndarray  # (G, 2) member, influencer
    blocks: np.ndarray  # (B, 2) blocker, blocked
    block_keys: np.ndarray  # sorted keys of blocks in both directions (a block hides both ways)
    # companies
    company_industry: np.ndarray
    company_location: np.ndarray
    # skills
    skill_home: np.ndarray  # industry of each skill
    skill_latent: np.ndarray
    # items: one global index, posts then jobs then courses then member cards
    item_type: np.ndarray  # (N,) int8
    item_actor: np.ndarray  # (N,) actor index: members [0,n), companies [n, n+c), learning n+c
    item_created: np.ndarray  # (N,) epoch seconds
    item_latent: np.ndarray  # (N, d) float32, unit norm
    item_popularity: np.ndarray  # (N,) float: intrinsic appeal
    item_connections_only: np.ndarray  # (N,) bool
    item_skills: np.ndarray  # (N, 3) int, -1 padded
    item_seniority: np.ndarray  # (N,) int, -1 where not a job
    item_difficulty: np.ndarray  # (N,) int, -1 where not a course
    post_index: Csr  # posts per author, in creation order
    jobs_by_industry: Csr  # job item ids per industry
    item_offsets: np.ndarray  # start of each item type in the global index (+ end)

    @property
    def n_members(self) -> int:
        return len(self.industry)

    @property
    def n_companies(self) -> int:
        return len(self.company_industry)

    @property
    def learning_actor(self) -> int:
        return self.n_members + self.n_companies

    def member_item(self, members: np.ndarray) -> np.ndarray:
        return self.item_offsets[MEMBER] + members

    def connected(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _member_of(self.edge_keys, a.astype(np.int64) * self.n_members + b)

    def blocked(self, member: np.ndarray, actor: np.ndarray) -> np.ndarray:
        """True where either side blocked the other (only member actors can be blocked)."""
        is_member = actor < self.n_members
        keys = member.astype(np.int64) * self.n_members + np.where(is_member, actor, 0)
        return is_member & _member_of(self.block_keys, keys)


def _member_of(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = np.searchsorted(sorted_keys, keys)
    pos = np.minimum(pos, len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)).astype(np.float32)


def _zipf_probs(k: int, s: float) -> np.ndarray:
    p = 1.0 / np.arange(1, k + 1) ** s
    return p / p.sum()


def _undirected_unique(u: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    keep = u != v
    lo, hi = np.minimum(u[keep], v[keep]), np.maximum(u[keep], v[keep])
    keys = np.unique(lo.astype(np.int64) * n + hi)
    return np.stack([keys // n, keys % n], axis=1)


def _both_ways_keys(pairs: np.ndarray, n: int) -> np.ndarray:
    a, b = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    return np.unique(np.concatenate([a * n + b, b * n + a]))


def _chung_lu(w: np.ndarray, industry: np.ndarray, cfg: WorldConfig, rng: np.random.Generator) -> np.ndarray:
    """Each node draws about w/2 partners degree-proportionally, inside its industry with prob. homophily."""
    n = len(w)
    src = np.repeat(np.arange(n), rng.poisson(w / 2.0))
    weight_int = np.maximum(1, np.round(w)).astype(np.int64)
    by_ind = np.argsort(industry, kind="stable")
    stubs = np.repeat(by_ind, weight_int[by_ind])
    stub_ind = industry[stubs]
    ind_start = np.searchsorted(stub_ind, np.arange(cfg.n_industries))
    ind_end = np.searchsorted(stub_ind, np.arange(cfg.n_industries), side="right")
    same = rng.random(len(src)) < cfg.homophily
    r = rng.random(len(src))
    si = industry[src]
    local = ind_start[si] + (r * (ind_end[si] - ind_start[si])).astype(np.int64)
    glob = (r * len(stubs)).astype(np.int64)
    dst = stubs[np.where(same, local, glob)]
    return _undirected_unique(src, dst, n)


def _graph(cfg: WorldConfig, industry: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Chung-Lu stubs with homophily, then triadic closure; returns unique undirected edges."""
    n = cfg.n_members
    gamma = cfg.degree_exponent
    # Pareto weights with tail exponent gamma, scaled so base + closure edges hit the mean degree.
    raw = (1.0 - rng.random(n)) ** (-1.0 / (gamma - 1.0))
    raw = np.minimum(raw, cfg.max_degree)
    w = raw * (cfg.mean_degree * (1.0 - cfg.triadic_closure) / raw.mean())
    w = np.clip(w, 1.0, cfg.max_degree)
    base = _chung_lu(w, industry, cfg, rng)
    # Duplicate pairs collapse (mostly among hubs); top up the shortfall twice at most.
    for _ in range(2):
        short = cfg.mean_degree * (1.0 - cfg.triadic_closure) * n / 2.0 - len(base)
        if short <= 0.02 * len(base):
            break
        extra = _chung_lu(w * (short / max(1.0, len(base))), industry, cfg, rng)
        both = np.concatenate([base, extra])
        base = _undirected_unique(both[:, 0], both[:, 1], n)
    if cfg.triadic_closure <= 0 or len(base) == 0:
        return base
    # Close triangles: from a random edge (u, v), link u to a random neighbour of v.
    g = Csr.from_pairs(np.concatenate([base[:, 0], base[:, 1]]), np.concatenate([base[:, 1], base[:, 0]]), n)
    n_close = round(len(base) * cfg.triadic_closure / (1.0 - cfg.triadic_closure))
    pick = rng.integers(0, 2 * len(base), n_close)
    u = np.where(pick < len(base), base[pick % len(base), 0], base[pick % len(base), 1])
    v = np.where(pick < len(base), base[pick % len(base), 1], base[pick % len(base), 0])
    wn = g.random_neighbour(v, rng)
    ok = wn >= 0
    closed = np.stack([u[ok], wn[ok]], axis=1)
    allp = np.concatenate([base, closed])
    return _undirected_unique(allp[:, 0], allp[:, 1], n)


def build_world(cfg: WorldConfig) -> World:
    rng = np.random.default_rng(cfg.seed)
    n, d, k_ind = cfg.n_members, cfg.latent_dim, cfg.n_industries
    industry = rng.choice(k_ind, size=n, p=_zipf_probs(k_ind, 0.6))
    seniority = rng.choice(len(SENIORITY), size=n, p=[0.1, 0.3, 0.3, 0.2, 0.1])
    location = rng.choice(cfg.n_locations, size=n, p=_zipf_probs(cfg.n_locations, 1.0))
    # Skills belong to an industry; members mostly hold their own industry's skills.
    skill_home = np.arange(cfg.n_skills) % k_ind
    ind_centroid = rng.normal(size=(k_ind, d))
    skill_latent = _unit(0.8 * ind_centroid[skill_home] + 0.6 * rng.normal(size=(cfg.n_skills, d)))
    per_ind = cfg.n_skills // k_ind if cfg.n_skills >= k_ind else 1
    own = (rng.integers(0, per_ind, size=(n, cfg.skills_per_member)) * k_ind + industry[:, None]) % cfg.n_skills
    other = rng.integers(0, cfg.n_skills, size=(n, cfg.skills_per_member))
    skills = np.where(rng.random((n, cfg.skills_per_member)) < 0.8, own, other)
    latent = _unit(ind_centroid[industry] + skill_latent[skills].mean(axis=1) + 0.5 * rng.normal(size=(n, d)))
    activity = rng.lognormal(0.0, 1.0, size=n)

    edges = _graph(cfg, industry, rng)
    graph = Csr.from_pairs(np.concatenate([edges[:, 0], edges[:, 1]]), np.concatenate([edges[:, 1], edges[:, 0]]), n)
    edge_keys = _both_ways_keys(edges, n)
    degree = graph.degree()

    # Companies, follows of companies (mostly in one's industry) and of influencers (top-degree members).
    c = cfg.n_companies
    company_industry = np.arange(c) % k_ind
    company_location = rng.choice(cfg.n_locations, size=c, p=_zipf_probs(cfg.n_locations, 1.0))
    n_fc = rng.poisson(cfg.follows_per_member * 0.7, size=n)
    fc_member = np.repeat(np.arange(n), n_fc)
    per_ind_companies = max(1, c // k_ind)
    fc_company = np.where(
        rng.random(len(fc_member)) < 0.8,
        (rng.integers(0, per_ind_companies, len(fc_member)) * k_ind + industry[fc_member]) % c,
        rng.integers(0, c, len(fc_member)),
    )
    follows_company = np.unique(np.stack([fc_member, fc_company], axis=1), axis=0)
    n_infl = max(1, int(n * cfg.influencer_share))
    influencers = np.argsort(-degree, kind="stable")[:n_infl]
    n_fm = rng.poisson(cfg.follows_per_member * 0.3, size=n)
    fm_member = np.repeat(np.arange(n), n_fm)
    fm_target = influencers[rng.integers(0, n_infl, len(fm_member))]
    keep = fm_target != fm_member
    follows_member = np.unique(np.stack([fm_member[keep], fm_target[keep]], axis=1), axis=0)

    # Blocks: half against someone in one's network, half against a stranger.
    n_blocks = round(cfg.block_rate * n)
    blocker = rng.integers(0, n, n_blocks)
    nb = graph.random_neighbour(blocker, rng)
    stranger = rng.integers(0, n, n_blocks)
    blocked = np.where((rng.random(n_blocks) < 0.5) & (nb >= 0), nb, stranger)
    keep = blocked != blocker
    blocks = np.unique(np.stack([blocker[keep], blocked[keep]], axis=1), axis=0).reshape(-1, 2)
    block_keys = _both_ways_keys(blocks, n)

    t0, horizon = cfg.start_time, cfg.horizon_days * DAY
    # Posts: authors in proportion to activity; created from 3 days before the start to the horizon.
    n_posts = int(rng.poisson(cfg.posts_per_member * n))
    p_author = rng.choice(n, size=n_posts, p=activity / activity.sum())
    p_topic = skills[p_author, rng.integers(0, cfg.skills_per_member, n_posts)]
    p_created = t0 - 3 * DAY + rng.random(n_posts) * (horizon + 3 * DAY)
    p_latent = _unit(skill_latent[p_topic] + 0.7 * latent[p_author] + 0.4 * rng.normal(size=(n_posts, d)))
    p_pop = rng.normal(0.0, 0.5, n_posts) + 0.25 * np.log1p(degree[p_author])
    p_conn = rng.random(n_posts) < cfg.connections_only_share
    order = np.lexsort((p_created, p_author))  # grouped by author, in creation order
    p_author, p_topic, p_created, p_latent, p_pop, p_conn = (
        p_author[order],
        p_topic[order],
        p_created[order],
        p_latent[order],
        p_pop[order],
        p_conn[order],
    )

    # Jobs: by companies, skills from the company's industry.
    n_jobs = int(rng.poisson(cfg.jobs_per_company * c))
    j_company = rng.integers(0, c, n_jobs)
    j_ind = company_industry[j_company]
    j_skills = (rng.integers(0, per_ind, size=(n_jobs, 3)) * k_ind + j_ind[:, None]) % cfg.n_skills
    j_created = t0 - 14 * DAY + rng.random(n_jobs) * (horizon + 14 * DAY)
    j_latent = _unit(skill_latent[j_skills].mean(axis=1) + 0.3 * rng.normal(size=(n_jobs, d)))
    j_pop = rng.normal(0.0, 0.4, n_jobs)
    j_sen = rng.choice(len(SENIORITY), size=n_jobs, p=[0.1, 0.3, 0.3, 0.2, 0.1])

    # Courses: published before the start.
    nc = cfg.n_courses
    c_ind = rng.integers(0, k_ind, nc)
    c_skills = np.full((nc, 3), -1)
    c_skills[:, :2] = (rng.integers(0, per_ind, size=(nc, 2)) * k_ind + c_ind[:, None]) % cfg.n_skills
    c_created = t0 - 60 * DAY + rng.random(nc) * 59 * DAY
    c_latent = _unit(skill_latent[c_skills[:, :2]].mean(axis=1) + 0.3 * rng.normal(size=(nc, d)))
    c_pop = rng.normal(0.0, 0.4, nc)
    c_diff = rng.integers(0, len(DIFFICULTY), nc)

    offsets = np.cumsum([0, n_posts, n_jobs, nc, n])
    p_skills = np.full((n_posts, 3), -1)
    p_skills[:, 0] = p_topic
    item_type = np.concatenate(
        [np.full(n_posts, POST), np.full(n_jobs, JOB), np.full(nc, COURSE), np.full(n, MEMBER)]
    ).astype(np.int8)
    item_actor = np.concatenate([p_author, n + j_company, np.full(nc, n + c), np.arange(n)]).astype(np.int64)
    item_created = np.concatenate([p_created, j_created, c_created, np.full(n, t0 - 30 * DAY)])
    item_latent = np.concatenate([p_latent, j_latent, c_latent, latent]).astype(np.float32)
    item_pop = np.concatenate([p_pop, j_pop, c_pop, 0.2 * np.log1p(degree)])
    item_conn = np.concatenate([p_conn, np.zeros(n_jobs + nc + n, dtype=bool)])
    member_skills3 = np.full((n, 3), -1)
    member_skills3[:, : min(3, cfg.skills_per_member)] = skills[:, :3]
    item_skills = np.concatenate([p_skills, j_skills, c_skills, member_skills3])
    item_sen = np.concatenate([np.full(n_posts, -1), j_sen, np.full(nc + n, -1)])
    item_diff = np.concatenate([np.full(n_posts + n_jobs, -1), c_diff, np.full(n, -1)])
    post_index = Csr.from_pairs(p_author, np.arange(n_posts), n)
    jobs_order = np.argsort(j_ind, kind="stable")
    jobs_by_industry = Csr.from_pairs(j_ind[jobs_order], offsets[JOB] + jobs_order, k_ind)

    return World(
        config=cfg,
        industry=industry,
        seniority=seniority,
        location=location,
        skills=skills,
        latent=latent,
        activity=activity,
        edges=edges,
        graph=graph,
        edge_keys=edge_keys,
        follows_company=follows_company,
        follows_member=follows_member,
        blocks=blocks,
        block_keys=block_keys,
        company_industry=company_industry,
        company_location=company_location,
        skill_home=skill_home,
        skill_latent=skill_latent,
        item_type=item_type,
        item_actor=item_actor,
        item_created=item_created,
        item_latent=item_latent,
        item_popularity=item_pop,
        item_connections_only=item_conn,
        item_skills=item_skills,
        item_seniority=item_sen,
        item_difficulty=item_diff,
        post_index=post_index,
        jobs_by_industry=jobs_by_industry,
        item_offsets=offsets,
    )
