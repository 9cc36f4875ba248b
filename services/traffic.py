"""A small traffic generator: a professional network, its content, and members acting on it.

It knows the true engagement probability of every impression (``true_p``), which lets the demo train
the second-pass model on labelled traffic. The full simulator with logging policies is issue 3's.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from feedrank.contracts import EventType, ItemType, MemberEvent

INDUSTRIES: dict[str, list[str]] = {
    "software": ["python", "java", "sql", "cloud", "ml", "devops", "go"],
    "finance": ["accounting", "excel", "risk", "sql", "valuation", "audit"],
    "marketing": ["seo", "content", "branding", "analytics", "social", "copywriting"],
    "health": ["nursing", "clinical", "research", "biology", "pharma", "care"],
    "sales": ["negotiation", "crm", "prospecting", "b2b", "retail", "excel"],
    "design": ["ux", "figma", "branding", "illustration", "research", "css"],
}
BASE_LOGIT = {ItemType.POST: -2.2, ItemType.JOB: -3.2, ItemType.COURSE: -3.0, ItemType.MEMBER: -2.8}
RESPONSE = {
    ItemType.POST: EventType.LIKE,
    ItemType.JOB: EventType.APPLY,
    ItemType.COURSE: EventType.ENROLL,
    ItemType.MEMBER: EventType.CONNECT,
}


@dataclass
class WorldItem:
    item_id: str
    item_type: ItemType
    actor_id: str
    skills: frozenset[str]


@dataclass
class World:
    members: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)  # id -> (industry, skills)
    connections: dict[str, set[str]] = field(default_factory=dict)
    items: dict[str, WorldItem] = field(default_factory=dict)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class TrafficGenerator:
    """Deterministic for a seed: the same arguments give the same events, in the same order."""

    def __init__(
        self,
        n_members: int = 300,
        n_companies: int = 20,
        n_courses: int = 40,
        sessions: int = 600,
        slate_size: int = 10,
        seed: int = 7,
        start_time: float | None = None,
    ) -> None:
        for name, value in (
            ("n_members", n_members),
            ("n_companies", n_companies),
            ("n_courses", n_courses),
            ("slate_size", slate_size),
        ):
            if value < 1:
                raise ValueError(f"traffic generator: {name} must be >= 1, got {value}")
        if sessions < 0:
            raise ValueError(f"traffic generator: sessions must be >= 0, got {sessions}")
        self.n_members = n_members
        self.n_companies = n_companies
        self.n_courses = n_courses
        self.sessions = sessions
        self.slate_size = slate_size
        self.seed = seed
        self.start_time = start_time

    def true_p(self, world: World, member_id: str, item: WorldItem) -> float:
        """The truth the rankers try to learn: skill affinity, tie strength, type base rate."""
        _, skills = world.members[member_id]
        affinity = len(skills & item.skills) / max(1, len(skills | item.skills))
        tie = 1.0 if item.actor_id in world.connections.get(member_id, ()) else 0.0
        return _sigmoid(BASE_LOGIT[item.item_type] + 3.0 * affinity + 0.8 * tie)

    def events(self) -> Iterator[MemberEvent]:
        rng = random.Random(self.seed)
        t = self.start_time if self.start_time is not None else time.time() - 2 * 86_400
        world = World()
        ids = (f"{self.seed}-{i}" for i in range(10**12))

        def ev(event_type: EventType, member_id: str, **kw) -> MemberEvent:
            nonlocal t
            t += rng.expovariate(50.0)
            return MemberEvent(
                event_id=uuid.UUID(int=rng.getrandbits(128)).hex,
                event_type=event_type,
                member_id=member_id,
                timestamp=t,
                **kw,
            )

        industries = sorted(INDUSTRIES)
        for i in range(self.n_members):
            mid = f"m{i}"
            ind = rng.choice(industries)
            pool = INDUSTRIES[ind] + rng.sample(sorted({s for v in INDUSTRIES.values() for s in v}), 2)
            skills = frozenset(rng.sample(pool, rng.randint(2, 4)))
            world.members[mid] = (ind, skills)
            world.connections[mid] = set()
            yield ev(EventType.MEMBER_JOINED, mid, attributes={"industry": ind, "skills": sorted(skills)})
        member_ids = list(world.members)
        by_industry: dict[str, list[str]] = {}
        for mid, (ind, _) in world.members.items():
            by_industry.setdefault(ind, []).append(mid)
        # Connections with homophily: most ties stay inside the industry.
        for mid in member_ids:
            for _ in range(rng.randint(1, 6)):
                same = rng.random() < 0.75
                other = rng.choice(by_industry[world.members[mid][0]] if same else member_ids)
                if other != mid and other not in world.connections[mid]:
                    world.connections[mid].add(other)
                    world.connections[other].add(mid)
                    yield ev(EventType.CONNECTION_MADE, mid, item_id=other, item_type=ItemType.MEMBER)
        for mid in rng.sample(member_ids, max(1, self.n_members // 50)):
            other = rng.choice(member_ids)
            if other != mid:
                yield ev(EventType.BLOCK, mid, item_id=other, item_type=ItemType.MEMBER)
        # Inventory: posts by members, jobs by companies, courses.
        for mid in member_ids:
            for _ in range(rng.choice([0, 1, 1, 2])):
                pid = f"p{next(ids)}"
                skills = frozenset(rng.sample(sorted(world.members[mid][1]), 1))
                world.items[pid] = WorldItem(pid, ItemType.POST, mid, skills)
                vis = "connections" if rng.random() < 0.1 else "public"
                yield ev(
                    EventType.POST_CREATED,
                    mid,
                    item_id=pid,
                    item_type=ItemType.POST,
                    attributes={"skills": sorted(skills), "visibility": vis},
                )
        for c in range(self.n_companies):
            cid, ind = f"co{c}", industries[c % len(industries)]
            for _ in range(3):
                jid = f"j{next(ids)}"
                skills = frozenset(rng.sample(INDUSTRIES[ind], 3))
                world.items[jid] = WorldItem(jid, ItemType.JOB, cid, skills)
                yield ev(
                    EventType.JOB_POSTED,
                    cid,
                    item_id=jid,
                    item_type=ItemType.JOB,
                    attributes={"skills": sorted(skills), "industry": ind},
                )
        for c in range(self.n_courses):
            ind = industries[c % len(industries)]
            crs = f"c{next(ids)}"
            skills = frozenset(rng.sample(INDUSTRIES[ind], 2))
            world.items[crs] = WorldItem(crs, ItemType.COURSE, "learning", skills)
            yield ev(
                EventType.COURSE_PUBLISHED,
                "learning",
                item_id=crs,
                item_type=ItemType.COURSE,
                attributes={"skills": sorted(skills)},
            )
        # Sessions: a uniformly random slate from every inventory; members act by the truth.
        items = list(world.items.values())
        for _ in range(self.sessions):
            mid = rng.choice(member_ids)
            slate = rng.sample(items, min(self.slate_size, len(items)))
            if rng.random() < 0.5:
                other = rng.choice(member_ids)
                if other != mid:
                    slate[-1] = WorldItem(other, ItemType.MEMBER, other, world.members[other][1])
            for pos, item in enumerate(slate):
                p = self.true_p(world, mid, item)
                common = dict(item_id=item.item_id, item_type=item.item_type, item_actor_id=item.actor_id)
                yield ev(EventType.IMPRESSION, mid, **common, attributes={"position": pos, "true_p": round(p, 6)})
                if rng.random() < p:
                    yield ev(EventType.CLICK, mid, **common)
                    if rng.random() < 0.5:
                        yield ev(RESPONSE[item.item_type], mid, **common)
