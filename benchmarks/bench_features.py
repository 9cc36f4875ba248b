"""Feature pipeline: sustained events/s of one Faust worker, and event-to-online freshness.

    python -m benchmarks.bench_features            # full run
    python -m benchmarks.bench_features --smoke    # seconds, for CI

Needs the local Kafka and Redis (`feedrank infra up`). Runs the real feature service
(`feedrank serve features`) on a fresh topic namespace and Feast project:

1. throughput: N events are put on `member-events` first, then the service is started and timed
   from its first committed offset to having committed the last one;
2. freshness: events stamped with the wall clock are sent at a fixed rate (open loop); the service's
   own histogram (time from event timestamp to the row written online) gives p50/p99.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
import urllib.request
from pathlib import Path

import redis

from benchmarks.bench_simulator import machine
from benchmarks.namespace import drop_run, run_settings
from features.store import apply_definitions
from feedrank import infra
from feedrank.contracts import EventType, ItemType, MemberEvent, Topic
from feedrank.settings import Settings
from services.kafka_io import LagProbe, ensure_topics, make_producer, topic
from services.supervisor import Supervisor


def events(n: int, now: bool, rng: random.Random, members: int = 20_000, items: int = 50_000, prefix: str = "b"):
    """``n`` impressions and clicks; ``prefix`` keeps event ids unique across calls (the service drops
    repeated ids as duplicates)."""
    kinds = [EventType.IMPRESSION] * 9 + [EventType.CLICK]
    types = list(ItemType)
    for i in range(n):
        item = rng.randrange(items)
        yield MemberEvent(
            event_id=f"{prefix}{i}",
            event_type=rng.choice(kinds),
            member_id=f"m{rng.randrange(members)}",
            timestamp=time.time() if now else 1_790_000_000.0 + i * 0.01,
            item_id=f"i{item}",
            item_type=types[item % 4],
            item_actor_id=f"a{item % 5000}",
        )


def quantile_from_histogram(text: str, name: str, q: float) -> float:
    """Linear interpolation inside the Prometheus histogram bucket that holds quantile q."""
    buckets = [
        (float(m.group(1)), float(m.group(2))) for m in re.finditer(rf'{name}_bucket{{le="([^"]+)"}} ([0-9.e+]+)', text)
    ]
    total = buckets[-1][1]
    target, prev_le, prev_c = q * total, 0.0, 0.0
    for le, c in buckets:
        if c >= target:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (target - prev_c) / max(c - prev_c, 1e-9)
        prev_le, prev_c = le, c
    return float("nan")


WARMUP_S = 5.0
FRESHNESS = "feedrank_feature_freshness_seconds"


def histogram_difference(after: str, before: str, name: str) -> str:
    """The observations made between two scrapes of a histogram, as exposition text of its buckets."""

    def buckets(text: str) -> dict[str, float]:
        return {le: float(c) for le, c in re.findall(rf'{name}_bucket{{le="([^"]+)"}} ([0-9.e+]+)', text)}

    b = buckets(before)
    return "\n".join(f'{name}_bucket{{le="{le}"}} {c - b.get(le, 0.0)}' for le, c in buckets(after).items())


def settle(s: Settings, timeout_s: float = 180.0) -> float:
    """Compact Redis's append-only file after the backlog and wait for it; returns the seconds waited.

    The backlog writes millions of rows, so Redis would otherwise start rewriting its append-only file
    (a forked copy of the whole keyspace) in the middle of the freshness window, taking a core the
    service needs on this 2-core machine. Rewrites are Redis's, not the service's: a production Redis
    does them on its own cores.
    """

    client, t0 = s.redis_client(), time.monotonic()
    if client.info("persistence").get("aof_enabled"):
        try:
            client.bgrewriteaof()
        except redis.ResponseError:  # one is running or scheduled already: wait for it instead
            pass
    time.sleep(0.5)
    while time.monotonic() - t0 < timeout_s:
        info = client.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            break
        time.sleep(0.5)
    return time.monotonic() - t0


def processed(text: str) -> float:
    return sum(float(v) for v in re.findall(r'feedrank_feature_events_total{outcome="[a-z_]+"} ([0-9.e+]+)', text))


def wait_caught_up(s: Settings, group: str, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    with LagProbe(s, group, Topic.MEMBER_EVENTS) as probe:
        while probe.lag() > 0:
            if time.monotonic() > deadline:
                raise TimeoutError("feature service did not catch up")
            time.sleep(0.2)
    return time.monotonic()


def run(n_backlog: int, rate: float, seconds: float) -> dict:
    base = Settings()
    infra.up(base)
    s = run_settings(base, features_metrics_port=9118)
    ensure_topics(s)
    apply_definitions(s)
    group = s.features_app_id
    producer = make_producer(s)
    out = topic(s, Topic.MEMBER_EVENTS)
    rng = random.Random(1)
    for e in events(n_backlog, now=False, rng=rng):
        producer.produce(out, e.to_bytes(), key=e.member_id)
        producer.poll(0)
    producer.flush(60)
    result: dict = {"machine": machine(), "backlog_events": n_backlog}
    scrape = f"http://127.0.0.1:{s.features_metrics_port}/metrics"
    with Supervisor(s) as sup:
        t0 = time.monotonic()
        sup.start("features")
        # Throughput: the service's own count of events processed, from the first to the last backlog event.
        samples = []
        while True:
            try:
                n = processed(urllib.request.urlopen(scrape, timeout=5).read().decode())
            except OSError:
                n = 0.0
            samples.append((time.monotonic(), n))
            if n >= n_backlog or time.monotonic() - t0 > 900:
                break
            time.sleep(0.1)
        # From the last scrape before the first batch was counted, so the first batch's work is inside.
        started = max((t for t, c in samples if c == 0), default=t0)
        (t_end, n_end) = samples[-1]
        result["startup_s"] = round(started - t0, 2)
        result["events_per_s"] = round(n_end / max(t_end - started, 1e-6))
        wait_caught_up(s, group, 600)
        result["backlog_settled_s"] = round(settle(s), 1)
        # Freshness under a fixed offered load, open loop: payloads built up front, only the timestamp
        # stamped at send time. The first WARMUP_S seconds are not measured: the histogram is scraped
        # when they end and when the run's last event is written, and the difference is the window's.
        templates = [
            e.model_dump(mode="json", exclude_none=True)
            for e in events(int(rate * (seconds + WARMUP_S)), now=True, rng=rng, prefix="r")
        ]
        start = time.monotonic()
        sent = 0
        before = ""
        for ev in templates:
            due = start + sent / rate
            if (delay := due - time.monotonic()) > 0.0005:
                time.sleep(delay)
            if not before and sent >= rate * WARMUP_S:
                before = urllib.request.urlopen(scrape, timeout=5).read().decode()
            ev["timestamp"] = time.time()
            producer.produce(out, json.dumps(ev).encode(), key=ev["member_id"])
            if sent % 100 == 0:
                producer.poll(0)
            sent += 1
        sending_s = time.monotonic() - start
        producer.flush(60)
        wait_caught_up(s, group, 600)
        time.sleep(1.5)
        after = urllib.request.urlopen(scrape, timeout=5).read().decode()
        result.update(rate_offered=rate, rate_achieved=round(sent / sending_s), measured_events=int(rate * seconds))
        result["freshness_window"] = histogram_difference(after, before, FRESHNESS)
        assert sup.dead() == {}, sup.dead()
    drop_run(s)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--backlog", type=int, default=100_000, help="events for the throughput run")
    p.add_argument("--rate", type=float, default=5_000, help="offered events/s for the freshness run")
    p.add_argument("--seconds", type=float, default=20, help="length of the freshness run")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args()
    res = run(5_000, 500, 3) if args.smoke else run(args.backlog, args.rate, args.seconds)
    window = res.pop("freshness_window")
    res["freshness_p50_ms"] = round(1000 * quantile_from_histogram(window, FRESHNESS, 0.5), 1)
    res["freshness_p99_ms"] = round(1000 * quantile_from_histogram(window, FRESHNESS, 0.99), 1)
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
