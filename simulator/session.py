"""Sessions over simulated time: content appears, members request feeds, a logging policy picks the
slates, and members act according to the truth.

Work is done in time-ordered batches of requests, each fully vectorised, and every batch yields the
member events it caused (in time order, content creation first) and its logged-traffic rows.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feedrank.contracts import CONNECTIONS, PUBLIC, MemberEvent, share_fields_set
from simulator.config import SessionConfig
from simulator.logs import LOG_SCHEMA
from simulator.policies import EpsilonGreedy, UniformRandom
from simulator.truth import ACTIONS, GroundTruth
from simulator.world import (
    COURSE,
    DIFFICULTY,
    ITEM_TYPE_NAMES,
    JOB,
    MEMBER,
    POST,
    ROLES,
    SENIORITY,
    SOURCE_NAMES,
    World,
)

ACTION_EVENT = {
    "clicked": "click",
    "liked": "like",
    "commented": "comment",
    "shared": "share",
    "applied": "apply",
    "enrolled": "enroll",
    "connected": "connect",
    "hidden": "hide",
}
ACTION_DELAY_S = {"clicked": 2.0, "hidden": 3.0}  # others: 5 s after the impression
_SCALE_MS = np.int64(1) << 36  # per-author block in post keys: 2^36 ms, about two years

EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("member_id", pa.string()),
        ("timestamp", pa.float64()),
        ("item_id", pa.string()),
        ("item_type", pa.string()),
        ("item_actor_id", pa.string()),
        # attributes, one typed column each (null where an event has none)
        ("skills", pa.list_(pa.string())),
        ("industry", pa.string()),
        ("seniority", pa.string()),
        ("location", pa.string()),
        ("visibility", pa.string()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("difficulty", pa.string()),
        ("category", pa.string()),
        ("request_id", pa.string()),
        ("position", pa.int32()),
        ("source", pa.string()),
        ("true_p", pa.float64()),
    ]
)
ATTRIBUTE_COLUMNS = [f.name for f in EVENT_SCHEMA][7:]

# A scorer ranks candidates for epsilon-greedy: (member, item, t) arrays -> scores (higher is better).
Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _names(prefix: str, ids: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(ids, pa.int64()), pa.string()), "")


@dataclass
class Names:
    """String ids for every integer id, made once."""

    member: pa.Array
    actor: pa.Array
    item: pa.Array
    skill: pa.Array
    industry: pa.Array
    location: pa.Array

    @staticmethod
    def of(world: World) -> Names:
        n, c = world.n_members, world.n_companies
        o = world.item_offsets
        member = _names("m", np.arange(n))
        actor = pa.concat_arrays([member, _names("co", np.arange(c)), pa.array(["learning"])])
        item = pa.concat_arrays(
            [
                _names("p", np.arange(o[1] - o[0])),
                _names("j", np.arange(o[2] - o[1])),
                _names("c", np.arange(o[3] - o[2])),
                member,
            ]
        )
        return Names(
            member,
            actor,
            item,
            _names("skill", np.arange(len(world.skill_home))),
            _names("industry", np.arange(world.config.n_industries)),
            _names("loc", np.arange(world.config.n_locations)),
        )


def _table(n: int, **cols: pa.Array | np.ndarray | list) -> pa.Table:
    arrays = []
    for f in EVENT_SCHEMA:
        v = cols.get(f.name)
        arrays.append(
            pa.nulls(n, f.type) if v is None else pa.array(v, f.type) if not isinstance(v, pa.Array) else v.cast(f.type)
        )
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


def _skill_lists(names: Names, skills: np.ndarray) -> pa.Array:
    """Rows of skill ids (-1 padded) to list<string>."""
    mask = skills >= 0
    offsets = np.zeros(len(skills) + 1, dtype=np.int32)
    np.cumsum(mask.sum(axis=1), out=offsets[1:])
    values = names.skill.take(pa.array(skills[mask].astype(np.int64)))
    return pa.ListArray.from_arrays(pa.array(offsets), values)


class Simulation:
    def __init__(
        self,
        world: World,
        config: SessionConfig,
        truth: GroundTruth | None = None,
        scorer: Scorer | None = None,
        scores_are_probabilities: bool = False,
    ) -> None:
        """``scorer`` is the ranking epsilon-greedy explores around. When its scores are probabilities of a
        click if examined (``scores_are_probabilities``, e.g. the oracle's relevance), each slot logs
        ``predicted`` = examination at the slot's position x score: a model that knows everything but
        fatigue, which O/E can then be checked on."""
        self.world = world
        self.scores_are_probabilities = scores_are_probabilities
        self.config = config
        self.truth = truth or GroundTruth(world)
        self.scorer = scorer
        self.policy = UniformRandom() if config.policy == "uniform" else EpsilonGreedy(config.epsilon)
        if config.policy != "uniform" and scorer is None:
            raise ValueError(f"policy {config.policy} needs a scorer (the ranking it explores around)")
        self.names = Names.of(world)
        self._event_seq = 0
        self._seen: Counter[int] = Counter()
        p_created = world.item_created[: world.item_offsets[1]]
        self._tmin = float(world.item_created.min())
        authors = world.item_actor[: world.item_offsets[1]]
        self._post_keys = authors * _SCALE_MS + self._ms(p_created)

    # ------------------------------------------------------------------ helpers
    def _ms(self, t: np.ndarray | float) -> np.ndarray:
        return ((np.asarray(t) - self._tmin) * 1000).astype(np.int64)

    def _event_ids(self, n: int) -> pa.Array:
        ids = _names(f"e{self.world.config.seed}-{self.config.seed}-", np.arange(self._event_seq, self._event_seq + n))
        self._event_seq += n
        return ids

    # ------------------------------------------------------------------ world events
    def world_events(self) -> Iterator[pa.Table]:
        """Everything that exists before the sessions start: members, graph, follows, blocks, inventory."""
        w, nm = self.world, self.names
        t0 = w.config.start_time
        n = w.n_members
        joined_t = t0 - 30 * 86_400 + np.arange(n) * (10 * 86_400 / max(n, 1))
        yield _table(
            n,
            event_id=self._event_ids(n),
            event_type=pa.array(["member_joined"] * n),
            member_id=nm.member,
            timestamp=joined_t,
            skills=_skill_lists(nm, w.skills),
            industry=nm.industry.take(w.industry),
            seniority=SENIORITY[w.seniority],
            location=nm.location.take(w.location),
        )
        t_edges = t0 - 20 * 86_400 + np.linspace(0, 10 * 86_400, len(w.edges), endpoint=False)
        for kind, pairs, target_names in (
            ("connection_made", w.edges, nm.member),
            ("follow", w.follows_member, nm.member),
            ("block", w.blocks, nm.member),
        ):
            m = len(pairs)
            ts = t_edges[:m] if kind == "connection_made" else np.full(m, t0 - 10 * 86_400 + 1.0)
            yield _table(
                m,
                event_id=self._event_ids(m),
                event_type=pa.array([kind] * m),
                member_id=nm.member.take(pa.array(pairs[:, 0])),
                timestamp=ts,
                item_id=target_names.take(pa.array(pairs[:, 1])),
                item_type=pa.array(["member"] * m),
            )
        fc = w.follows_company
        m = len(fc)
        yield _table(
            m,
            event_id=self._event_ids(m),
            event_type=pa.array(["follow"] * m),
            member_id=nm.member.take(pa.array(fc[:, 0])),
            timestamp=np.full(m, t0 - 10 * 86_400 + 2.0),
            item_id=_names("co", fc[:, 1]),
            item_type=pa.array(["member"] * m),
        )
        yield from self._content_events(-np.inf, t0)

    def _content_events(self, after: float, until: float) -> Iterator[pa.Table]:
        """Creation events of the posts, jobs and courses created in (after, until], in time order."""
        w, nm = self.world, self.names
        created = w.item_created
        itype = w.item_type
        idx = np.flatnonzero((created > after) & (created <= until) & (itype != MEMBER))
        if len(idx) == 0:
            return
        idx = idx[np.argsort(created[idx], kind="stable")]
        m = len(idx)
        t = itype[idx]
        event_type = np.array(["post_created", "job_posted", "course_published", ""])[t]
        sen = w.item_seniority[idx]
        diff = w.item_difficulty[idx]
        skill0 = np.maximum(w.item_skills[idx, 0], 0)
        skill_name = nm.skill.take(pa.array(skill0)).to_numpy(zero_copy_only=False).astype(str)
        role = ROLES[idx % len(ROLES)]
        title = np.where(
            t == JOB,
            np.char.add(
                np.char.add(np.char.add(SENIORITY[np.maximum(sen, 0)], " "), skill_name), np.char.add(" ", role)
            ),
            np.where(t == COURSE, np.char.add("Mastering ", skill_name), None),
        )
        description = np.where(
            t == POST,
            np.char.add("Thoughts on ", skill_name),
            np.where(t == JOB, np.char.add("We are hiring for ", skill_name), None),
        )
        actor = w.item_actor[idx]
        company_loc = w.company_location[np.clip(actor - w.n_members, 0, w.n_companies - 1)]
        yield _table(
            m,
            event_id=self._event_ids(m),
            event_type=event_type,
            member_id=nm.actor.take(pa.array(actor)),
            timestamp=created[idx],
            item_id=nm.item.take(pa.array(idx)),
            item_type=ITEM_TYPE_NAMES[t],
            skills=_skill_lists(nm, w.item_skills[idx]),
            seniority=np.where(t == JOB, SENIORITY[np.maximum(sen, 0)], None),
            location=pa.array(
                np.where(t == JOB, nm.location.take(pa.array(company_loc)).to_numpy(zero_copy_only=False), None),
                pa.string(),
            ),
            visibility=np.where(t == POST, np.where(w.item_connections_only[idx], CONNECTIONS, PUBLIC), None),
            title=title,
            description=description,
            difficulty=np.where(t == COURSE, DIFFICULTY[np.maximum(diff, 0)], None),
            category=pa.array(
                np.where(
                    t == COURSE, nm.industry.take(pa.array(w.skill_home[skill0])).to_numpy(zero_copy_only=False), None
                ),
                pa.string(),
            ),
        )

    # ------------------------------------------------------------------ candidates
    def candidates(
        self, member: np.ndarray, t: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, C) candidate item ids, their source, and which are valid (visible, unique, existing)."""
        w, cfg = self.world, self.config
        b = len(member)
        parts, sources = [], []
        if cfg.network_candidates:
            k = cfg.network_candidates
            mm = np.repeat(member, k)
            author = w.graph.random_neighbour(mm, rng)
            a = np.maximum(author, 0)
            pos = np.searchsorted(self._post_keys, a * _SCALE_MS + self._ms(np.repeat(t, k)), side="right") - 1
            pos -= rng.integers(0, 3, len(pos))  # one of the author's last three posts
            ok = (author >= 0) & (pos >= w.post_index.indptr[a]) & (pos < w.post_index.indptr[a + 1])
            parts.append(np.where(ok, w.item_offsets[POST] + np.maximum(pos, 0), -1).reshape(b, k))
            sources.append(np.zeros((b, k), dtype=np.int8))
        if cfg.job_candidates:
            k = cfg.job_candidates
            mm = np.repeat(member, k)
            ind_jobs = w.jobs_by_industry.random_neighbour(w.industry[mm], rng)
            n_jobs = w.item_offsets[JOB + 1] - w.item_offsets[JOB]
            any_job = w.item_offsets[JOB] + rng.integers(0, max(n_jobs, 1), len(mm))
            job = np.where((rng.random(len(mm)) < 0.7) & (ind_jobs >= 0), ind_jobs, any_job if n_jobs else -1)
            job = np.where((job >= 0) & (w.item_created[np.maximum(job, 0)] <= np.repeat(t, k)), job, -1)
            parts.append(job.reshape(b, k))
            sources.append(np.ones((b, k), dtype=np.int8))
        if cfg.course_candidates:
            k = cfg.course_candidates
            n_courses = w.item_offsets[COURSE + 1] - w.item_offsets[COURSE]
            parts.append(w.item_offsets[COURSE] + rng.integers(0, n_courses, (b, k)))
            sources.append(np.full((b, k), 2, dtype=np.int8))
        if cfg.people_candidates:
            k = cfg.people_candidates
            mm = np.repeat(member, k)
            fof = w.graph.random_neighbour(np.maximum(w.graph.random_neighbour(mm, rng), 0), rng)
            ok = (fof >= 0) & (fof != mm) & ~w.connected(mm, np.maximum(fof, 0))
            parts.append(np.where(ok, w.item_offsets[MEMBER] + np.maximum(fof, 0), -1).reshape(b, k))
            sources.append(np.full((b, k), 3, dtype=np.int8))
        items = np.concatenate(parts, axis=1)
        source = np.concatenate(sources, axis=1)
        valid = items >= 0
        safe = np.maximum(items, 0)
        mrep = np.broadcast_to(member[:, None], items.shape)
        actor = w.item_actor[safe]
        valid &= ~w.blocked(mrep.ravel(), actor.ravel()).reshape(items.shape)
        # Connections-only posts reach connections only (network candidates already are; kept as a guard).
        conn_only = w.item_connections_only[safe]
        if conn_only.any():
            need = valid & conn_only
            rows, cols = np.nonzero(need)
            ok = w.connected(member[rows], actor[rows, cols])
            valid[rows[~ok], cols[~ok]] = False
        # One copy of each item per request.
        key = np.where(valid, items, -1 - np.arange(items.shape[1])[None, :])
        order = np.argsort(key, axis=1, kind="stable")
        sorted_keys = np.take_along_axis(key, order, axis=1)
        dup_sorted = np.zeros_like(valid)
        dup_sorted[:, 1:] = sorted_keys[:, 1:] == sorted_keys[:, :-1]
        dup = np.zeros_like(valid)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        valid &= ~dup
        return items, source, valid

    def rank(self, member: np.ndarray, items: np.ndarray, t: np.ndarray) -> np.ndarray | None:
        """(B, C) scores of the ranking the policy explores around (None for the uniform policy)."""
        if self.scorer is None:
            return None
        k = items.shape[1]
        return self.scorer(np.repeat(member, k), np.maximum(items, 0).ravel(), np.repeat(t, k)).reshape(items.shape)

    def request_names(self, first_request: int, rows: np.ndarray) -> pa.Array:
        """The request id of each logged slot (``rows``: its request's index in the batch)."""
        return _names(f"r{self.world.config.seed}-{self.config.seed}-", first_request + rows)

    def predicted(
        self, rows: np.ndarray, cols: np.ndarray, scores: np.ndarray | None, position: np.ndarray
    ) -> np.ndarray | None:
        """The model's click probability for each logged slot at its position, where a model scored it."""
        if scores is None or not self.scores_are_probabilities:
            return None
        return scores[rows, cols] * self.truth.examination(position)

    # ------------------------------------------------------------------ sessions
    def request_schedule(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        w, cfg = self.world, self.config
        t0, horizon = w.config.start_time, w.config.horizon_days * 86_400
        times = np.sort(t0 + rng.random(cfg.n_requests) * horizon)
        members = rng.choice(w.n_members, size=cfg.n_requests, p=w.activity / w.activity.sum())
        return members, times

    def sessions(self) -> Iterator[tuple[pa.Table, pa.Table]]:
        """Per batch of requests: (member events, logged-traffic rows)."""
        cfg = self.config
        rng = np.random.default_rng([self.world.config.seed, cfg.seed])
        members, times = self.request_schedule(rng)
        last = self.world.config.start_time
        for lo in range(0, cfg.n_requests, cfg.batch_size):
            m, t = members[lo : lo + cfg.batch_size], times[lo : lo + cfg.batch_size]
            content = list(self._content_events(last, float(t[-1])))
            last = float(t[-1])
            events, log = self._serve(lo, m, t, rng)
            yield pa.concat_tables([*content, events]), log

    def collect(self, progress: Any | None = None) -> tuple[list[MemberEvent], pd.DataFrame]:
        """The whole run in memory: every member event (the world's, then the sessions') and the impression
        log, as FPR trainers read them. ``progress`` (rich's ``Progress``) gets one task over the requests."""
        events = [e for t in self.world_events() for e in events_to_member_events(t)]
        logs: list[pa.Table] = []
        task = progress.add_task("simulating sessions", total=self.config.n_requests) if progress else None
        for table, log in self.sessions():
            events.extend(events_to_member_events(table))
            logs.append(log)
            if progress is not None:
                progress.update(task, advance=self.config.batch_size)
        frame = pa.concat_tables(logs) if logs else LOG_SCHEMA.empty_table()
        return events, frame.to_pandas()

    def _serve(
        self, first_request: int, member: np.ndarray, t: np.ndarray, rng: np.random.Generator
    ) -> tuple[pa.Table, pa.Table]:
        w, nm, cfg = self.world, self.names, self.config
        items, source, valid = self.candidates(member, t, rng)
        scores = self.rank(member, items, t)
        slate, prop = self.policy.choose(scores, valid, cfg.slate_size, rng)
        rows, pos = np.nonzero(slate >= 0)
        col = slate[rows, pos]
        item = items[rows, col]
        mem = member[rows]
        t_req = t[rows]
        t_imp = t_req + 0.05 * pos
        # Fatigue: earlier impressions of the same item to the same member, this batch included.
        keys = mem.astype(np.int64) * len(w.item_type) + item
        _, inverse = np.unique(keys, return_inverse=True)
        order = np.argsort(inverse, kind="stable")  # stable: earlier requests and positions first
        grouped = inverse[order]
        ranks = np.empty(len(keys), dtype=np.int64)
        ranks[order] = np.arange(len(keys)) - np.searchsorted(grouped, grouped)
        seen = self._seen
        prior = np.fromiter((seen.get(k, 0) for k in keys.tolist()), dtype=np.int64, count=len(keys)) + ranks
        seen.update(keys.tolist())
        probs = self.truth.action_probs(mem, item, pos, t_imp, prior)
        acts = self.truth.sample(probs, rng)
        predicted = self.predicted(rows, col, scores, pos)

        request_ids = self.request_names(first_request, rows)
        member_names = nm.member.take(pa.array(mem))
        item_names = nm.item.take(pa.array(item))
        itype_names = pa.array(ITEM_TYPE_NAMES[w.item_type[item]])
        src_names = pa.array(SOURCE_NAMES[source[rows, col]])
        actor_names = nm.actor.take(pa.array(w.item_actor[item]))
        log = pa.Table.from_arrays(
            [
                request_ids,
                member_names,
                pa.array(t_req),
                pa.array(pos.astype(np.int32)),
                item_names,
                itype_names,
                src_names,
                pa.array(prop[rows, pos]),
                *[pa.array(acts[a]) for a in ACTIONS],
                pa.array(predicted, pa.float64()) if predicted is not None else pa.nulls(len(rows), pa.float64()),
                pa.array(probs["clicked"]),
            ],
            schema=LOG_SCHEMA,
        )
        # Events: the impression, then each action it led to, all in time order.
        n = len(rows)
        parts = [(np.arange(n), "impression", t_imp)]
        for a in ACTIONS:
            hit = np.flatnonzero(acts[a])
            if len(hit):
                parts.append((hit, ACTION_EVENT[a], t_imp[hit] + ACTION_DELAY_S.get(a, 5.0)))
        sel = np.concatenate([p[0] for p in parts])
        kinds = np.concatenate([np.full(len(p[0]), i, dtype=np.int8) for i, p in enumerate(parts)])
        ts = np.concatenate([p[2] for p in parts])
        order = np.argsort(ts, kind="stable")
        sel, kinds, ts = sel[order], kinds[order], ts[order]
        kind_names = np.array([p[1] for p in parts])
        is_imp = kinds == 0
        idx = pa.array(sel)
        events = _table(
            len(sel),
            event_id=self._event_ids(len(sel)),
            event_type=kind_names[kinds],
            member_id=member_names.take(idx),
            timestamp=ts,
            item_id=item_names.take(idx),
            item_type=itype_names.take(idx),
            item_actor_id=actor_names.take(idx),
            request_id=request_ids.take(idx),
            position=pa.array(np.where(is_imp, pos[sel], None), pa.int32()),
            source=src_names.take(idx),
            true_p=pa.array(np.where(is_imp, probs["clicked"][sel], None), pa.float64()),
        )
        return events, log


_BASE_FIELDS = ("event_id", "event_type", "member_id", "timestamp", "item_id", "item_type", "item_actor_id")


# Names that repeat from event to event: one string each, not one per event (``sys.intern``; an interned
# string is freed with its last event). A trainer or an evaluation holds millions of events, and their
# names were a sixth of each event's memory; each event also shares its record of given fields
# (``share_fields_set``).
_SHARED_NAMES = ("member_id", "item_id", "item_actor_id", "request_id", "source")


def events_to_member_events(table: pa.Table) -> Iterator[MemberEvent]:
    """Rows of an events table as validated ``member-events`` messages (typed columns become attributes)."""
    for row in table.to_pylist():
        for k in _SHARED_NAMES:
            if row[k] is not None:
                row[k] = sys.intern(row[k])
        fields = {k: row[k] for k in _BASE_FIELDS if row[k] is not None}
        attributes = {k: row[k] for k in ATTRIBUTE_COLUMNS if row[k] is not None}
        yield share_fields_set(MemberEvent(**fields, attributes=attributes))
