"""The ceiling Faust itself puts on one worker: events/s of an agent that does nothing with its events.

    python -m benchmarks.bench_faust_floor [--events N] [--uvloop]

Needs the local Kafka (`feedrank infra up`). Puts N events (the feature benchmark's) on a fresh
`member-events` topic, then runs a Faust worker whose agent only counts them in ``take_events``
batches, with the feature service's consumer settings, and prints events/s from the first to the Nth.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid

from benchmarks.bench_features import events
from benchmarks.bench_simulator import machine
from feedrank.settings import Settings
from services.kafka_io import ensure_topics, make_producer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--uvloop", action="store_true")
    args = p.parse_args()
    s = Settings(topic_prefix=f"floor-{uuid.uuid4().hex[:8]}-")
    ensure_topics(s)
    producer = make_producer(s)
    for e in events(args.events, now=False, rng=random.Random(1)):
        producer.produce(f"{s.topic_prefix}member-events", e.to_bytes(), key=e.member_id)
        producer.poll(0)
    producer.flush(60)
    if args.uvloop:
        import mode.loop

        mode.loop.use("uvloop")
    import faust

    from features.app import CONSUMER_SETTINGS

    app = faust.App(
        f"{s.topic_prefix}floor",
        broker=f"kafka://{s.kafka_bootstrap}",
        store="memory://",
        web_enabled=False,
        datadir=str(s.state_dir / "faust-floor"),
        **CONSUMER_SETTINGS,
    )
    source = app.topic(f"{s.topic_prefix}member-events", key_serializer="raw", value_serializer="raw")
    seen = {"n": 0, "t0": 0.0}

    @app.agent(source)
    async def count(stream):
        async for batch in stream.noack().take_events(5000, within=0.05):
            if not seen["n"]:
                seen["t0"] = time.monotonic()
            seen["n"] += len(batch)
            if seen["n"] >= args.events:
                rate = seen["n"] / (time.monotonic() - seen["t0"])
                print(f"{machine()} | uvloop={args.uvloop} | {rate:,.0f} events/s", file=sys.__stdout__, flush=True)
                os._exit(0)

    sys.argv = [sys.argv[0], "worker"]
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
