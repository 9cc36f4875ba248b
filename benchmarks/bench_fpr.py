"""First-pass rankers in-process: latency of one top-k answer, and quality against the oracle.

    python -m benchmarks.bench_fpr                 # demo scale: 2,000 members, k=100, 1,000 requests
    python -m benchmarks.bench_fpr --quality       # also each FPR vs its baseline on held-out traffic
    python -m benchmarks.bench_fpr --smoke         # a small world, seconds

Latency: every configured FPR is trained on the demo's simulated traffic (as ``make demo`` does),
its inventory is the demo world's, fully folded; then ``top_k(k=100)`` is timed for members drawn
like feed requests (by activity), plus members it has never seen (cold start). Pure Python in one
process: no Kafka, so this is the ranker's own share of a feed's latency budget.

Quality: ``feedrank fpr evaluate NAME --simulate`` for each FPR (NDCG@10 against the oracle ordering
of the FPR's candidates, model vs baseline, on the last 30% of the simulated time).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from typing import Any

import numpy as np

from benchmarks.bench_simulator import machine
from evaluation.fpr_oracle import oracle_eval, simulate
from feedrank.progress import progress_bar
from feedrank.settings import Settings
from rankers.registry import load_config
from rankers.training import NoProgress, replay
from services.traffic import SimulatedTraffic


def _pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(xs, q)), 3)


def latency(members: int, requests: int, n_requests: int, k: int, seed: int = 7) -> dict[str, Any]:
    config = load_config(Settings().pipeline_config)
    traffic = SimulatedTraffic(members=members, requests=requests, seed=seed).logged()
    inv = replay(traffic.events, traffic.log.iloc[:0], lambda _inv, _rows: None)
    rng = np.random.default_rng(seed)
    asked = traffic.log["member_id"].to_numpy()
    who = list(rng.choice(asked, n_requests)) + [f"stranger{i}" for i in range(max(10, n_requests // 20))]
    now = inv.latest
    out: dict[str, Any] = {"machine": machine(), "members": members, "k": k, "requests": len(who), "fprs": {}}
    for name, spec in config.fprs.items():
        t0 = time.perf_counter()
        trained = spec.resolve_trainer()(traffic, {}, NoProgress())
        train_s = time.perf_counter() - t0
        ranker = spec.build(model=trained.scorer)
        for m in who[:20]:  # warm caches (embeddings of the members asked first)
            ranker.top_k(inv, m, now, k)
        gc.collect()
        ms, sizes, empty = [], [], 0
        for m in who:
            t = time.perf_counter()
            got = ranker.top_k(inv, m, now, k)
            ms.append((time.perf_counter() - t) * 1000)
            sizes.append(len(got))
            empty += not got
        out["fprs"][name] = {
            "p50_ms": _pct(ms, 50),
            "p95_ms": _pct(ms, 95),
            "p99_ms": _pct(ms, 99),
            "max_ms": round(max(ms), 3),
            "mean_returned": round(float(np.mean(sizes)), 1),
            "empty_answers": empty,
            "train_s": round(train_s, 1),
            "train_metrics": trained.metrics,
        }
    return out


def quality(members: int, requests: int, n_requests: int, seed: int = 11) -> dict[str, Any]:
    config = load_config(Settings().pipeline_config)
    out: dict[str, Any] = {"members": members, "requests": requests, "seed": seed, "fprs": {}}
    with progress_bar() as progress:
        sw = simulate(members=members, requests=requests, seed=seed, progress=progress)
        for name, spec in config.fprs.items():
            out["fprs"][name] = oracle_eval(
                sw,
                spec.resolve_trainer(),
                lambda m, spec=spec: spec.build(model=m),
                spec.build_baseline(),
                n_requests=n_requests,
                progress=progress,
            )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--quality", action="store_true")
    p.add_argument("--members", type=int, default=2000)
    p.add_argument("--requests", type=int, default=3000, help="simulated feed requests the FPRs train on")
    p.add_argument("--n", type=int, default=1000, help="timed top-k requests per FPR")
    p.add_argument("--k", type=int, default=100)
    args = p.parse_args()
    if args.smoke:
        report = {"latency": latency(300, 600, 50, args.k)}
    else:
        report = {"latency": latency(args.members, args.requests, args.n, args.k)}
        if args.quality:
            report["quality"] = quality(2000, 20_000, 400)
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
