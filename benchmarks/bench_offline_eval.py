"""Offline evaluation at scale: ``feedrank eval oe / replay / ranking`` on 1M logged rows.

Builds a synthetic log in the logged-traffic format (100k requests x 10 positions, each slot drawn
uniformly from 40 candidates, so propensity 1/40; clicks drawn from a known probability; a noisy
``predicted``) and a deterministic policy table with one row per slot, writes both as Parquet, then
times each command exactly as a user runs it (``feedrank.cli.main``, in process, output discarded):
reading the files, validating, joining, every estimator and its 95% interval. Python's start-up and
the first import of each module are excluded by a warm-up run; the median and best of ``--repeat``
runs are reported.

    python -m benchmarks.bench_offline_eval [--requests 100000] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from benchmarks.bench_simulator import machine
from feedrank.cli import main as feedrank

POSITIONS = 10
CANDIDATES = 40
SOURCES = np.array(["network", "jobs", "courses", "people"])


def synthetic_log(requests: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A uniformly logged slate per request and a deterministic policy over the same candidates."""
    rng = np.random.default_rng(seed)
    n = requests * POSITIONS
    req = np.repeat(np.arange(requests), POSITIONS)
    pos = np.tile(np.arange(POSITIONS), requests)
    logged = np.argsort(rng.random((requests, CANDIDATES)), axis=1)[:, :POSITIONS].ravel()
    chosen = rng.integers(0, CANDIDATES, size=n)  # the evaluated policy's item for each slot
    p = 1 / (1 + np.exp(-rng.normal(-3.0, 1.0, size=n))) * (1 + pos) ** -0.7
    rid = pd.Series(req).map("r{:d}".format).to_numpy()
    log = pd.DataFrame(
        {
            "request_id": rid,
            "position": pos.astype(np.int32),
            "item_id": pd.Series(logged).map("i{:d}".format).to_numpy(),
            "source": SOURCES[rng.integers(0, len(SOURCES), size=n)],
            "propensity": np.full(n, 1 / CANDIDATES),
            "clicked": rng.random(n) < p,
            "predicted": np.clip(p * rng.lognormal(0.0, 0.3, size=n), 0, 1),
        }
    )
    policy = pd.DataFrame(
        {
            "request_id": rid,
            "position": pos,
            "item_id": pd.Series(chosen).map("i{:d}".format).to_numpy(),
            "probability": np.ones(n),
        }
    )
    return log, policy


def _time(argv: list[str], repeat: int) -> dict[str, float]:
    def once() -> float:
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = feedrank(argv)
        if code != 0:
            raise RuntimeError(f"feedrank {' '.join(argv)} exited {code}")
        return time.perf_counter() - t

    once()  # warm-up: imports
    runs = [once() for _ in range(repeat)]
    return {"median_s": statistics.median(runs), "best_s": min(runs)}


def run(requests: int = 100_000, repeat: int = 5) -> dict[str, Any]:
    log, policy = synthetic_log(requests)
    with tempfile.TemporaryDirectory() as tmp:
        log_path, policy_path = Path(tmp) / "log.parquet", Path(tmp) / "policy.parquet"
        log.to_parquet(log_path, index=False)
        policy.to_parquet(policy_path, index=False)
        commands = {
            "eval oe (overall, interval, reliability table)": ["eval", "oe", "--log", str(log_path), "--json"],
            "eval oe --by source --by position": [
                *("eval", "oe", "--log", str(log_path), "--json"),
                *("--by", "source", "--by", "position"),
            ],
            "eval replay (replay, IPS, SNIPS, 200 bootstrap draws)": [
                *("eval", "replay", "--log", str(log_path), "--policy", str(policy_path), "--json"),
            ],
            "eval ranking (AUC, gAUC, NDCG/MAP/HR@5,10)": ["eval", "ranking", "--log", str(log_path), "--json"],
        }
        timings = {name: _time(argv, repeat) for name, argv in commands.items()}
    return {"machine": machine(), "rows": len(log), "requests": requests, "repeat": repeat, "commands": timings}


def render(report: dict[str, Any]) -> None:
    table = Table(title=f"Offline evaluation of {report['rows']:,} logged rows ({report['machine']})")
    table.add_column("command")
    table.add_column("median s", justify="right")
    table.add_column("best s", justify="right")
    for name, t in report["commands"].items():
        table.add_row(name, f"{t['median_s']:.2f}", f"{t['best_s']:.2f}")
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="2,000 requests (20,000 rows), one timed run")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--json", nargs="?", const="-", type=str, metavar="PATH", help="the result as JSON: to stdout, or to PATH"
    )
    args = parser.parse_args()
    report = run(2_000, 1) if args.smoke else run(args.requests, args.repeat)
    if args.json != "-":
        render(report)
    if args.json == "-":
        print(json.dumps(report, indent=2))
    elif args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
