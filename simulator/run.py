"""Run a simulation to files: member events, logged traffic and the world's tables, with progress."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from feedrank.progress import progress_bar
from simulator.config import SessionConfig, WorldConfig
from simulator.logs import LOG_SCHEMA, write_csv
from simulator.session import EVENT_SCHEMA, Names, Scorer, Simulation
from simulator.truth import GroundTruth
from simulator.world import ITEM_TYPE_NAMES, World, build_world

RANKERS = ("popularity", "oracle")


@dataclass
class RunStats:
    members: int
    items: int
    edges: int
    requests: int
    events: int
    log_rows: int
    world_s: float
    events_s: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.events_s if self.events_s else float("nan")


def scorer_for(name: str, world: World, truth: GroundTruth) -> Scorer:
    """Rankings epsilon-greedy can explore around: item popularity, or the oracle's relevance."""
    if name == "popularity":
        return lambda m, i, t: world.item_popularity[i]
    if name == "oracle":
        return lambda m, i, t: truth.relevance(m, i, t)
    raise ValueError(f"ranker must be one of {RANKERS}, got {name!r}")


def write_world(world: World, out: Path) -> None:
    """The world's tables, for inspection and for offline training and oracles in later stages."""
    names = Names.of(world)
    pq.write_table(
        pa.table(
            {
                "member_id": names.member,
                "industry": names.industry.take(pa.array(world.industry)),
                "seniority": world.seniority,
                "location": names.location.take(pa.array(world.location)),
                "degree": world.graph.degree(),
                "activity": world.activity,
            }
        ),
        out / "members.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "item_id": names.item,
                "item_type": ITEM_TYPE_NAMES[world.item_type],
                "actor_id": names.actor.take(pa.array(world.item_actor)),
                "created": world.item_created,
                "popularity": world.item_popularity,
                "connections_only": world.item_connections_only,
            }
        ),
        out / "items.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "member_a": names.member.take(pa.array(world.edges[:, 0])),
                "member_b": names.member.take(pa.array(world.edges[:, 1])),
            }
        ),
        out / "edges.parquet",
    )


EventSink = Callable[[pa.Table], object]


def simulate_to_files(
    world_cfg: WorldConfig,
    session_cfg: SessionConfig,
    out: Path,
    fmt: str = "parquet",
    ranker: str = "popularity",
    show_progress: bool = True,
    with_world: bool = True,
    event_sink: EventSink | None = None,
    simulation: Simulation | None = None,
    on_world_done: Callable[[], object] | None = None,
) -> RunStats:
    """Write events and the impression log under ``out``, and hand every events table to ``event_sink``
    (e.g. Kafka). ``simulation`` replaces the default one (e.g. one served by the live system);
    ``on_world_done`` runs between the world's events and the sessions (e.g. to let consumers catch up)."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"format must be 'parquet' or 'csv', got {fmt!r}")
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    if simulation is None:
        world = build_world(world_cfg)
        truth = GroundTruth(world)
        scorer = scorer_for(ranker, world, truth) if session_cfg.policy == "epsilon-greedy" else None
        simulation = Simulation(world, session_cfg, truth, scorer, scores_are_probabilities=ranker == "oracle")
    sim, world = simulation, simulation.world
    world_s = time.perf_counter() - t_start
    t_events = time.perf_counter()
    events = log_rows = 0
    ev_writer = pq.ParquetWriter(out / "events.parquet", EVENT_SCHEMA)
    log_parts: list[pa.Table] = []
    log_writer = pq.ParquetWriter(out / "impressions.parquet", LOG_SCHEMA) if fmt == "parquet" else None
    with progress_bar(disable=not show_progress) as progress:
        task = progress.add_task("requests", total=session_cfg.n_requests)
        for table in sim.world_events():
            ev_writer.write_table(table)
            events += table.num_rows
            if event_sink is not None:
                event_sink(table)
        if on_world_done is not None:
            on_world_done()
        for ev, log in sim.sessions():
            ev_writer.write_table(ev)
            events += ev.num_rows
            if event_sink is not None:
                event_sink(ev)
            log_rows += log.num_rows
            if log_writer is not None:
                log_writer.write_table(log)
            else:
                log_parts.append(log)
            progress.update(task, advance=session_cfg.batch_size)
    ev_writer.close()
    if log_writer is not None:
        log_writer.close()
    else:
        write_csv(pa.concat_tables(log_parts) if log_parts else LOG_SCHEMA.empty_table(), out / "impressions.csv")
    events_s = time.perf_counter() - t_events
    if with_world:
        write_world(world, out)
    stats = RunStats(
        world.n_members,
        len(world.item_type),
        len(world.edges),
        session_cfg.n_requests,
        events,
        log_rows,
        world_s,
        events_s,
    )
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "world": world_cfg.model_dump(),
                "sessions": session_cfg.model_dump(),
                "ranker": ranker,
                "stats": {**stats.__dict__, "events_per_s": stats.events_per_s},
            },
            indent=2,
        )
    )
    return stats
