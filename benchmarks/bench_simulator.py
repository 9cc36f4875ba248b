"""Simulator throughput: events generated per second, written to Parquet, on one core.

    python -m benchmarks.bench_simulator            # full: 100k and 1M members
    python -m benchmarks.bench_simulator --smoke    # seconds, for CI

Pins the process to one CPU and numpy's thread pools to one thread, so the figure is per core.
"""

from __future__ import annotations

import argparse
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from simulator.config import SessionConfig, WorldConfig  # noqa: E402
from simulator.run import simulate_to_files  # noqa: E402

FULL = [(100_000, 1_000_000), (1_000_000, 1_000_000)]
SMOKE = [(2_000, 5_000)]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, Python {platform.python_version()}"


def run(sizes: list[tuple[int, int]]) -> list[dict]:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rows = []
    for members, requests in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            stats = simulate_to_files(
                WorldConfig(
                    n_members=members, n_companies=max(20, members // 50), n_courses=max(20, members // 20), seed=1
                ),
                SessionConfig(n_requests=requests, seed=1),
                Path(tmp),
                show_progress=False,
                with_world=False,
            )
        rows.append(
            {
                "members": members,
                "requests": requests,
                "edges": stats.edges,
                "events": stats.events,
                "world_build_s": round(stats.world_s, 2),
                "events_s": round(stats.events_s, 2),
                "events_per_s": round(stats.events_per_s),
                "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args()
    print(f"machine: {machine()}; one core")
    rows = run(SMOKE if args.smoke else FULL)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
