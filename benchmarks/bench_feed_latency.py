"""Feed latency end to end: a feed request on Kafka to its ranked feed on Kafka, through every FPR
service and the mixer, under an open-loop load.

    python -m benchmarks.bench_feed_latency                       # 50 requests/s for 60 s, k = 125 per FPR
    python -m benchmarks.bench_feed_latency --rate 100 --seconds 30
    python -m benchmarks.bench_feed_latency --smoke               # a small world, a few seconds of load

Everything runs on this machine as in production, each service its own process: the Kafka broker,
Redis, the feature service, the four FPR services and the mixer (``services.supervisor``), on a topic
namespace of their own. The world is the demo's (2,000 members, 3,000 logged requests of traffic sent
to ``member-events`` first, models trained on it if the benchmark's model directory has none), and
every FPR answers its top ``--k`` (125 each: about 400 candidates per request, 378 on average as the
network FPR has fewer posts to offer most members; the mixer's explanations give the exact count).

**Open loop.** Requests are sent on a fixed schedule, ``start + i / rate``, whether or not earlier
ones were answered, for random members; a request's latency is the time from its *scheduled* send to
its feed arriving at the client, so a stall is charged to every request it delays (no coordinated
omission). The first ``--warmup`` seconds are sent but not counted. A request with no feed within
``--timeout`` seconds of the end counts as lost.

Reports p50/p95/p99/max latency, the throughput of feeds received, lost requests, feeds that failed
open (an FPR missing at the deadline), where the time went (the mixer's gather-to-publish time,
``gather_ms``, split into waiting for the FPRs and mixing once the answers were in; the rest is the
request's way to the mixer and the feed's way back), the candidates per request, and each process's
CPU share over the measured window.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from benchmarks.namespace import drop_run, run_settings
from feedrank import infra
from feedrank.contracts import FeedRequest, Topic
from feedrank.progress import progress_bar
from feedrank.settings import Settings
from services.demo import prepare, wait_until_serving
from services.feed_client import FeedClient
from services.feed_state import ExplanationStore
from services.kafka_io import REQUEST_PATH, consume_ready, make_consumer, make_producer, topic
from services.runtime import assign_at_end
from services.supervisor import Supervisor, pipeline_services
from services.traffic import SimulatedTraffic
from services.traffic_service import publish_traffic


@dataclass(frozen=True)
class LoadSpec:
    rate: float = 50.0
    seconds: float = 60.0
    warmup: float = 10.0
    k: int = 125
    members: int = 2000
    requests: int = 3000
    feed_size: int = 20
    timeout: float = 10.0
    seed: int = 0
    mixer_workers: int = 1


SMOKE = LoadSpec(rate=20.0, seconds=4.0, warmup=1.0, k=20, members=400, requests=400)


def bench_config(settings: Settings, k: int, work: Path) -> Path:
    """The configured pipeline with every FPR answering its top ``k``."""
    text = settings.pipeline_config.read_text()
    path = work / f"pipeline-k{k}.toml"
    path.write_text(re.sub(r"(?m)^k = \d+$", f"k = {k}", text))
    return path


def bench_settings(base: Settings, spec: LoadSpec) -> Settings:
    """A namespace of its own (topics, Feast project, logs); models kept between runs of one world."""
    work = base.state_dir / "bench"
    work.mkdir(parents=True, exist_ok=True)
    s = run_settings(
        base,
        models_path=work / f"models-{spec.members}-{spec.requests}",
        pipeline_config=bench_config(base, spec.k, work),
        feed_size=spec.feed_size,
        mixer_workers=spec.mixer_workers,
    )
    run = s.feast_project
    return s.model_copy(update={"logs_path": work / f"logs-{run}", "impressions_path": work / f"impressions-{run}"})


class FeedReceiver(threading.Thread):
    """Reads ``ranked-feeds`` from its current end and stamps each feed's arrival."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.consumer = make_consumer(settings, f"bench-receiver-{uuid.uuid4().hex}")
        assign_at_end(self.consumer, topic(settings, Topic.RANKED_FEEDS))
        self.arrived: dict[str, float] = {}
        self.feeds: dict[str, dict[str, Any]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for m in consume_ready(self.consumer, 500, 0.05):
                if m.error():
                    continue
                now = time.monotonic()
                doc = json.loads(m.value())
                rid = doc.get("request_id")
                if rid and rid not in self.arrived:
                    self.arrived[rid] = now
                    self.feeds[rid] = {
                        "items": len(doc.get("items", ())),
                        "missing": doc.get("sources_missing", []),
                        "gather_ms": doc.get("gather_ms", 0.0),
                        "mix_ms": doc.get("mix_ms", 0.0),
                    }
        self.consumer.close()


def send_open_loop(settings: Settings, spec: LoadSpec, members: list[str], progress: Any) -> dict[str, float]:
    """Each request at its scheduled time (monotonic), whatever happened to the earlier ones."""
    producer = make_producer(settings, **REQUEST_PATH)
    out_topic = topic(settings, Topic.FEED_REQUESTS)
    rng = np.random.default_rng(spec.seed)
    n = round(spec.rate * (spec.warmup + spec.seconds))
    who = rng.choice(members, size=n)
    scheduled: dict[str, float] = {}
    task = progress.add_task(f"{spec.rate:g} requests/s", total=n)
    start = time.monotonic() + 0.2
    for i in range(n):
        at = start + i / spec.rate
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        req = FeedRequest.new(str(who[i]), spec.feed_size)
        producer.produce(out_topic, req.to_bytes(), key=req.request_id)
        producer.poll(0)
        scheduled[req.request_id] = at
        if i % 50 == 0:
            progress.update(task, completed=i)
    producer.flush(10)
    progress.update(task, completed=n)
    return scheduled


def cpu_times(procs: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process."""
    out = {}
    for name, pid in procs.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:
            continue
    return out


def percentiles(ms: np.ndarray) -> dict[str, float]:
    if not len(ms):
        return {q: float("nan") for q in ("p50", "p95", "p99", "max", "mean")}
    return {
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()),
        "mean": float(ms.mean()),
    }


def run(spec: LoadSpec, base: Settings | None = None) -> dict[str, Any]:
    base = base or Settings()
    components = infra.up(base)
    for c in components:
        if not c.reachable:
            raise RuntimeError(f"infrastructure not reachable: {c.line()}")
    infra_pids = {c.name: c.pid for c in components if c.pid}  # Kafka's JVM and redis-server, if ours
    s = bench_settings(base, spec)
    generator = SimulatedTraffic(members=spec.members, requests=spec.requests, seed=7)
    t0 = time.perf_counter()
    prepare(s, generator)
    expected = {n.removeprefix("fpr-") for n in pipeline_services(s) if n.startswith("fpr-")}
    members = [f"m{i}" for i in range(spec.members)]
    try:
        with Supervisor(s) as sup, progress_bar() as progress:
            sup.start_all()
            publish_traffic(s, generator, show_progress=False)
            client = FeedClient(s)
            try:
                wait_until_serving(client, members[0], expected)
            finally:
                client.close()
            setup_s = time.perf_counter() - t0
            receiver = FeedReceiver(s)
            receiver.start()
            pids = {**{name: p.pid for name, p in sup.procs.items()}, **infra_pids, "load generator": os.getpid()}
            cpu0, wall0 = cpu_times(pids), time.monotonic()
            scheduled = send_open_loop(s, spec, members, progress)
            deadline = time.monotonic() + spec.timeout
            while time.monotonic() < deadline and len(receiver.arrived) < len(scheduled):
                time.sleep(0.05)
            cpu1, wall1 = cpu_times(pids), time.monotonic()
            receiver.stop.set()
            receiver.join(10)
            if dead := sup.dead():
                raise RuntimeError(f"services exited during the benchmark: {dead}; logs in {s.log_dir}")
            cpu_share = {name: round((t - cpu0.get(name, 0.0)) / (wall1 - wall0), 3) for name, t in cpu1.items()}
            explanations = ExplanationStore(s.redis_client(), s)
            sample = list(receiver.arrived)[:: max(1, len(receiver.arrived) // 50)]
            candidates = [d["candidates"] for d in map(explanations.load, sample) if d and "candidates" in d]
    finally:
        drop_run(s)
    first_counted = min(scheduled.values()) + spec.warmup
    counted = {rid: at for rid, at in scheduled.items() if at >= first_counted}
    got = {rid: receiver.arrived[rid] - at for rid, at in counted.items() if rid in receiver.arrived}
    latency_ms = np.array(list(got.values())) * 1000.0
    arrivals = np.array([receiver.arrived[rid] for rid in got])
    span = float(arrivals.max() - min(counted.values())) if len(arrivals) else float("nan")
    gather = np.array([receiver.feeds[rid]["gather_ms"] for rid in got])
    mix = np.array([receiver.feeds[rid]["mix_ms"] for rid in got])
    fell_open = sum(1 for rid in got if receiver.feeds[rid]["missing"])
    lat = percentiles(latency_ms)
    return {
        "spec": spec.__dict__,
        "sent": len(scheduled),
        "counted": len(counted),
        "received": len(got),
        "lost": len(counted) - len(got),
        "throughput_per_s": len(got) / span if span and span > 0 else float("nan"),
        "latency_ms": lat,
        "gather_ms": percentiles(gather),
        "mix_ms": percentiles(mix),
        "waiting_ms": percentiles(gather - mix),
        "transit_ms": percentiles(latency_ms - gather),
        "fell_open": fell_open,
        "mean_items": float(np.mean([receiver.feeds[r]["items"] for r in got])) if got else float("nan"),
        "candidates_per_request": float(np.mean(candidates)) if candidates else float("nan"),
        "cpu_share": dict(sorted(cpu_share.items(), key=lambda kv: -kv[1])),
        "setup_s": round(setup_s, 1),
        "logs": str(s.log_dir),
    }


def render(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    spec = res["spec"]
    table = Table(
        title=(
            f"Feed latency, open loop at {spec['rate']:g} requests/s for {spec['seconds']:g} s "
            f"(k = {spec['k']} per FPR, {res['candidates_per_request']:.0f} candidates per request)"
        )
    )
    for col in ("", "p50", "p95", "p99", "max", "mean"):
        table.add_column(col, justify="left" if not col else "right")
    for name, key in (
        ("request to feed (ms)", "latency_ms"),
        ("mixer gather to publish (ms)", "gather_ms"),
        ("  waiting for the FPRs (ms)", "waiting_ms"),
        ("  mixing (ms)", "mix_ms"),
        ("outside the mixer (ms)", "transit_ms"),
    ):
        m = res.get(key)
        if m is None:
            continue
        table.add_row(name, *(f"{m[q]:.1f}" for q in ("p50", "p95", "p99", "max", "mean")))
    console.print(table)
    console.print(
        f"received {res['received']} of {res['counted']} counted requests ({res['lost']} lost), "
        f"{res['throughput_per_s']:.1f} feeds/s; {res['fell_open']} fell open"
    )
    console.print(f"CPU share over the window (1.0 = one core): {res['cpu_share']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="a small world and a few seconds of load")
    p.add_argument("--rate", type=float, default=LoadSpec.rate, help="requests per second, open loop")
    p.add_argument("--seconds", type=float, default=LoadSpec.seconds, help="measured seconds of load")
    p.add_argument("--warmup", type=float, default=LoadSpec.warmup, help="seconds of load sent first, not counted")
    p.add_argument("--k", type=int, default=LoadSpec.k, help="candidates each FPR answers")
    p.add_argument("--mixer-workers", type=int, default=1, help="mixer processes (FEEDRANK_MIXER_WORKERS)")
    p.add_argument("--json", type=Path, help="write the result here")
    args = p.parse_args()
    spec = (
        SMOKE
        if args.smoke
        else LoadSpec(
            rate=args.rate, seconds=args.seconds, warmup=args.warmup, k=args.k, mixer_workers=args.mixer_workers
        )
    )
    res = run(spec)
    render(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
