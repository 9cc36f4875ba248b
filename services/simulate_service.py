"""``feedrank simulate`` with Kafka: publish the simulation's events, or let the live pipeline serve it."""

from __future__ import annotations

from pathlib import Path

from feedrank.settings import Settings
from services.traffic_service import MemberEventPublisher
from simulator.config import SessionConfig, WorldConfig
from simulator.run import RunStats, simulate_to_files
from simulator.world import build_world


def simulate(
    settings: Settings,
    world: WorldConfig,
    sessions: SessionConfig,
    out: Path,
    *,
    fmt: str = "parquet",
    ranker: str = "popularity",
    kafka: bool = False,
    show_progress: bool = True,
) -> tuple[RunStats, int]:
    """Run to files; with ``kafka`` (implied by the live policy) every event also goes to member-events.

    Returns the run's statistics and the number of events published.
    """
    if sessions.policy != "live" and not kafka:
        return simulate_to_files(world, sessions, out, fmt=fmt, ranker=ranker, show_progress=show_progress), 0
    publisher = MemberEventPublisher(settings)
    simulation = None
    ready = publisher.flush
    if sessions.policy == "live":
        from services.live_simulation import LiveSimulation, wait_for_pipeline

        simulation = LiveSimulation(build_world(world), sessions, settings)

        def ready() -> None:  # the world is on Kafka: let the pipeline catch up before serving it
            publisher.flush()
            wait_for_pipeline(settings, simulation)

    try:
        stats = simulate_to_files(
            world,
            sessions,
            out,
            fmt=fmt,
            ranker=ranker,
            show_progress=show_progress,
            event_sink=publisher.publish_table,
            simulation=simulation,
            on_world_done=ready,
        )
    finally:
        publisher.flush()
        if simulation is not None:
            simulation.close()
    return stats, publisher.sent
