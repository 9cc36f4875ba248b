"""Traffic for the live pipeline: the simulator's world and sessions as ``member-events`` messages.

The world is placed so that its sessions end now, which keeps its content fresh for the FPRs
(they judge recency against the wall clock).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from feedrank.contracts import MemberEvent
from rankers.training import LoggedTraffic
from simulator.config import SessionConfig, WorldConfig
from simulator.session import Simulation, events_to_member_events
from simulator.world import DAY, build_world


@dataclass(frozen=True)
class SimulatedTraffic:
    """Deterministic for its parameters: ``events()`` yields the same events every time."""

    members: int = 2000
    requests: int = 3000
    seed: int = 7
    horizon_days: float = 3.0
    end_time: float = field(default_factory=time.time)

    def configs(self) -> tuple[WorldConfig, SessionConfig]:
        world = WorldConfig.build(
            "world",
            seed=self.seed,
            n_members=self.members,
            n_companies=max(10, self.members // 50),
            n_courses=max(20, self.members // 20),
            mean_degree=min(20.0, self.members / 10),
            horizon_days=self.horizon_days,
            start_time=self.end_time - self.horizon_days * DAY,
        )
        sessions = SessionConfig.build("sessions", seed=self.seed, n_requests=self.requests)
        return world, sessions

    def events(self) -> Iterator[MemberEvent]:
        world_cfg, session_cfg = self.configs()
        sim = Simulation(build_world(world_cfg), session_cfg)
        for table in sim.world_events():
            yield from events_to_member_events(table)
        for table, _log in sim.sessions():
            yield from events_to_member_events(table)

    def logged(self) -> LoggedTraffic:
        """The same events, with the logged-traffic rows of the sessions: what FPR trainers read."""
        world_cfg, session_cfg = self.configs()
        events, log = Simulation(build_world(world_cfg), session_cfg).collect()
        return LoggedTraffic(events, log, self.describe())

    def describe(self) -> str:
        return f"simulator seed={self.seed} members={self.members} requests={self.requests}"
