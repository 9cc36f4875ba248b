"""Serving feature read for one feed request vs a raw pipelined Redis read of the same keys.

    python -m benchmarks.bench_online_read            # 500 candidates, 300 repetitions
    python -m benchmarks.bench_online_read --smoke

Writes a simulated world's feature rows to a fresh Feast project on the local Redis, then times, for
one member and N candidates (every view's row of each: about 6N keys):
- raw: the same HMGETs in one pipeline, bytes only (the floor);
- fast: ``FastOnlineReader`` (the mixer's path: the same pipeline plus decoding into a DataFrame);
- sdk: Feast's ``get_online_features`` for the same entities and features.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import uuid
from pathlib import Path

from benchmarks.bench_simulator import machine
from features.families import recompute, stored_rows
from features.redis_layout import raw_read
from features.store import FastOnlineReader, OnlineReader, OnlineWriter, apply_definitions, drop_online_rows
from feedrank import infra
from feedrank.settings import Settings
from services.traffic import SimulatedTraffic


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def run(n_candidates: int, reps: int) -> dict:
    base = Settings()
    infra.up(base)
    s = Settings(**{**base.model_dump(), "feast_project": f"bench_read_{uuid.uuid4().hex[:8]}"})
    store = apply_definitions(s)
    table = recompute(SimulatedTraffic(members=3000, requests=6000, seed=3).events())
    OnlineWriter(store, s).write(stored_rows(table.keys(), table), time.time())
    impressions = {k.split("|")[1]: row["n"][0] for k, row in table.items() if k.startswith("member_stats|")}
    member = max(impressions, key=impressions.__getitem__)
    items = sorted({tuple(k.split("|")[1:]) for k in table if k.startswith("member_actor_type|")})
    cands = [(f"item{i}", t, actor) for i, (_, actor, t) in enumerate(items[:n_candidates])]
    item_ids = [k.split("|")[1] for k in table if k.startswith("item_stats|")]
    cands = [(item_ids[i % len(item_ids)], t, a) for i, (_, t, a) in enumerate(cands)]
    del table, items, item_ids  # a large live heap makes gen-2 GC pauses part of the timings
    gc.collect()
    gc.freeze()
    fast = FastOnlineReader(store, s)
    layout = fast._layout
    plan = layout.request_keys(member, cands)
    client = s.redis_client()
    sdk = OnlineReader(store)
    n_keys = sum(len(keys) for _, keys, _ in plan)
    for _ in range(10):  # warm caches and connections
        fast.read(member, cands)
        raw_read(client, layout.request_keys(member, cands), layout.fields)
    raw_ms = timed(lambda: raw_read(client, layout.request_keys(member, cands), layout.fields), reps)
    fast_ms = timed(lambda: fast.read(member, cands), reps)
    sdk_ms = timed(lambda: sdk.read(member, cands), max(10, reps // 10))
    drop_online_rows(s, s.feast_project)  # repeated runs must not grow Redis (a big one stalls on rewrites)

    def p(xs: list[float], q: float) -> float:
        return round(sorted(xs)[min(len(xs) - 1, int(q * len(xs)))], 2)

    return {
        "machine": machine(),
        "candidates": len(cands),
        "redis_keys": n_keys,
        "raw_ms": {"p50": p(raw_ms, 0.5), "p99": p(raw_ms, 0.99)},
        "fast_ms": {"p50": p(fast_ms, 0.5), "p99": p(fast_ms, 0.99)},
        "sdk_ms": {"p50": p(sdk_ms, 0.5), "p99": p(sdk_ms, 0.99)},
        "fast_over_raw_p50": round(statistics.median(fast_ms) / statistics.median(raw_ms), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--candidates", type=int, default=500)
    p.add_argument("--reps", type=int, default=300)
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args()
    res = run(50, 20) if args.smoke else run(args.candidates, args.reps)
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
