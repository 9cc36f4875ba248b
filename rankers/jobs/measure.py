"""The jobs FPR's acceptance measurements, reproducible: ``python -m rankers.jobs.measure oracle|offline|latency``.

oracle:  simulate(2000 members, 20000 requests, 7 days, seed 11); oracle_eval of the trained FPR against
         popularity on 400 held-out requests (NDCG@10), with the trainer's metrics.
offline: evaluate_interactions(JobsInteractionModel()) on that world's job clicks, against popularity.
latency: simulate(2000, 3000, 3 days); train on it; top_k(k=100) for 500 members of the final inventory
         after a joblib round trip: the cold first call, then p50/p99 once caches are warm.
"""

from __future__ import annotations

import io
import json
import sys
import time
from typing import Any

import joblib
import numpy as np

from evaluation.fpr_oracle import oracle_eval, simulate
from evaluation.interactions import evaluate_interactions
from rankers.baselines import PopularityScorer
from rankers.jobs.offline import JobsInteractionModel
from rankers.jobs.ranker import build
from rankers.jobs.train import train
from rankers.training import NoProgress, replay


def oracle(params: dict[str, Any]) -> dict[str, Any]:
    sw = simulate(members=2000, requests=20_000, days=7, seed=11)
    return oracle_eval(sw, train, lambda m: build(model=m), PopularityScorer(), params=params, n_requests=400)


def offline() -> dict[str, Any]:
    sw = simulate(members=2000, requests=20_000, days=7, seed=11)
    log = sw.traffic.log
    df = log[log["clicked"] & (log["item_type"] == "job")][["member_id", "item_id", "timestamp"]]
    return evaluate_interactions(JobsInteractionModel(), df.reset_index(drop=True))


def latency(params: dict[str, Any], members: int = 500) -> dict[str, Any]:
    sw = simulate(members=2000, requests=3000, days=3, seed=11)
    trained = train(sw.traffic, params, NoProgress())
    buf = io.BytesIO()
    joblib.dump(trained.scorer, buf)
    buf.seek(0)
    ranker = build(model=joblib.load(buf))
    inv = replay(sw.traffic.events, sw.traffic.log.iloc[:0], lambda *_: None)
    now = inv.latest
    ids = sorted(inv.members)[:members]
    t = time.perf_counter()
    ranker.top_k(inv, ids[0], now, k=100)
    cold = time.perf_counter() - t
    lat = []
    for m in ids:
        t = time.perf_counter()
        ranker.top_k(inv, m, now, k=100)
        lat.append(time.perf_counter() - t)
    ms = np.array(lat) * 1e3
    return {
        "artifact_mb": len(buf.getvalue()) / 1e6,
        "candidates": len(ranker.candidate_ids(inv, ids[0], now)),
        "first_call_ms": cold * 1e3,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "train_metrics": trained.metrics,
    }


def main(argv: list[str]) -> None:
    what = argv[0] if argv else "oracle"
    params = json.loads(argv[1]) if len(argv) > 1 else {}
    out = {"oracle": lambda: oracle(params), "offline": offline, "latency": lambda: latency(params)}[what]()
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main(sys.argv[1:])
