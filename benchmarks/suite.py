"""``feedrank bench``: every benchmark in one command, and the figures against the targets.

    feedrank bench                      # the full suite (about 15 minutes), results under .feedrank/bench/results
    feedrank bench --smoke              # every benchmark in a small setting (a few minutes; what CI runs)
    feedrank bench --only feed-50 --only online-read
    feedrank bench --write              # also replace the summary section of BENCHMARKS.md

Each benchmark runs as its own process (``python -m benchmarks.NAME ... --json PATH``), one after the
other, so none competes with another for the 2 cores; its output goes to ``NAME.log`` next to its
JSON. The summary compares each figure with its target; a smoke run's figures come from small
settings and are not comparable to the targets (CI checks that the benchmarks run, not their speed).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feedrank.settings import REPO_ROOT, Settings

MARK_BEGIN = "<!-- feedrank bench: begin -->"
MARK_END = "<!-- feedrank bench: end -->"


@dataclass(frozen=True)
class Bench:
    name: str
    module: str
    what: str
    full: tuple[str, ...] = ()
    smoke: tuple[str, ...] | None = ("--smoke",)  # None: not part of the smoke run


SUITE: list[Bench] = [
    Bench(
        "feed-50",
        "benchmarks.bench_feed_latency",
        "feed request to ranked feed through Kafka, 4 FPR services and the mixer, 50 requests/s open loop",
        ("--rate", "50", "--seconds", "60", "--mixer-workers", "2"),
    ),
    Bench(
        "feed-100",
        "benchmarks.bench_feed_latency",
        "the same at 100 requests/s (the stretch target)",
        ("--rate", "100", "--seconds", "30", "--mixer-workers", "2"),
        None,
    ),
    Bench(
        "features",
        "benchmarks.bench_features",
        "feature pipeline: sustained events/s of one worker, freshness at 5,000 events/s",
        ("--backlog", "400000", "--rate", "5000", "--seconds", "20"),
    ),
    Bench("online-read", "benchmarks.bench_online_read", "one request's feature read vs a raw pipelined Redis read"),
    Bench("offline-eval", "benchmarks.bench_offline_eval", "eval oe / replay (IPS, SNIPS) / ranking on 1M logged rows"),
    Bench("simulator", "benchmarks.bench_simulator", "simulator events/s, to Parquet, on one core"),
]
BY_NAME = {b.name: b for b in SUITE}


@dataclass(frozen=True)
class Target:
    label: str
    bench: str
    value: Callable[[dict[str, Any]], float]
    goal: float
    higher_is_better: bool
    unit: str

    def met(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        return x >= self.goal if self.higher_is_better else x <= self.goal


def _feed_p99(res: dict[str, Any]) -> float:
    """p99 of the counted requests; a lost request makes the p99 unbounded."""
    return float("inf") if res["lost"] else float(res["latency_ms"]["p99"])


def _rows_per_s(command: str) -> Callable[[dict[str, Any]], float]:
    def value(res: dict[str, Any]) -> float:
        return res["rows"] / res["commands"][command]["median_s"]

    return value


TARGETS: list[Target] = [
    Target("feed p99 at 50 requests/s", "feed-50", _feed_p99, 50.0, False, "ms"),
    Target("stretch: feed p99 at 100 requests/s", "feed-100", _feed_p99, 30.0, False, "ms"),
    Target("feature events/s, one worker", "features", lambda r: r["events_per_s"], 20_000, True, "events/s"),
    Target("freshness p99 at 5,000 events/s", "features", lambda r: r["freshness_p99_ms"], 500.0, False, "ms"),
    Target(
        "serving feature read / raw Redis read (p50)", "online-read", lambda r: r["fast_over_raw_p50"], 2.0, False, "x"
    ),
    Target(
        "eval oe rows/s",
        "offline-eval",
        _rows_per_s("eval oe (overall, interval, reliability table)"),
        1e6,
        True,
        "rows/s",
    ),
    Target(
        "eval replay (replay, IPS, SNIPS) rows/s",
        "offline-eval",
        _rows_per_s("eval replay (replay, IPS, SNIPS, 200 bootstrap draws)"),
        1e6,
        True,
        "rows/s",
    ),
    Target(
        "simulator events/s (no target)",
        "simulator",
        lambda r: max(x["events_per_s"] for x in r["runs"]),
        0.0,
        True,
        "events/s",
    ),
]


def run_one(bench: Bench, smoke: bool, out: Path) -> tuple[int, float]:
    """The benchmark as a child process; its exit code and wall seconds."""
    args = bench.smoke if smoke else bench.full
    assert args is not None
    cmd = [sys.executable, "-m", bench.module, *args, "--json", str(out / f"{bench.name}.json")]
    t0 = time.perf_counter()
    with open(out / f"{bench.name}.log", "w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, check=False).returncode
    return code, time.perf_counter() - t0


def summarize(out: Path, smoke: bool, machine: str) -> dict[str, Any]:
    """Each target's measured figure (from the JSON results under ``out``), and whether it is met."""
    rows = []
    for t in TARGETS:
        path = out / f"{t.bench}.json"
        if not path.exists():
            continue
        value = float(t.value(json.loads(path.read_text())))
        rows.append(
            {
                "target": t.label,
                "bench": t.bench,
                "goal": t.goal,
                "unit": t.unit,
                "higher_is_better": t.higher_is_better,
                "measured": value,
                "met": t.met(value) if t.goal else None,
            }
        )
    return {
        "machine": machine,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "smoke": smoke,
        "targets": rows,
    }


def _fmt(x: float, unit: str) -> str:
    if not math.isfinite(x):
        return "lost requests" if unit == "ms" else "n/a"
    if unit == "x":
        return f"{x:.2f}x"
    if unit == "ms":
        return f"{x:.1f} ms"
    return f"{x:,.0f} {unit}"


def cells(r: dict[str, Any], no: str = "no") -> tuple[str, str, str, str]:
    """One summary row as (target, goal, measured, met) text; ``no`` is how a missed target reads."""
    sign = ">=" if r["higher_is_better"] else "<="
    goal = f"{sign} {_fmt(r['goal'], r['unit'])}" if r["goal"] else ""
    met = "" if r["met"] is None else ("yes" if r["met"] else no)
    return r["target"], goal, _fmt(r["measured"], r["unit"]), met


def markdown(summary: dict[str, Any]) -> str:
    mode = "smoke run (small settings, not comparable to the targets)" if summary["smoke"] else "full run"
    lines = [
        f"`feedrank bench`, {mode}, {summary['date']}. Machine: {summary['machine']}; Kafka, Redis, every",
        "service and the load generators share it.",
        "",
        "| target | goal | measured | met |",
        "|---|---:|---:|:---:|",
    ]
    lines += ["| " + " | ".join(cells(r, no="**no**")) + " |" for r in summary["targets"]]
    return "\n".join(lines) + "\n"


def write_section(path: Path, body: str) -> None:
    """Replace what lies between the suite's markers in ``path`` (appended with them if absent)."""
    text = path.read_text() if path.exists() else ""
    block = f"{MARK_BEGIN}\n{body}{MARK_END}"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        _, tail = rest.split(MARK_END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--smoke", action="store_true", help="every benchmark in a small setting (what CI runs)")
    p.add_argument("--only", action="append", choices=list(BY_NAME), help="run only this benchmark (repeatable)")
    p.add_argument("--out", type=Path, help="results folder (default: STATE_DIR/bench/results)")
    p.add_argument("--write", action="store_true", help="replace the summary section of BENCHMARKS.md")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from benchmarks.bench_simulator import machine

    console = Console()
    out: Path = args.out or Settings().state_dir / "bench" / ("smoke" if args.smoke else "results")
    out.mkdir(parents=True, exist_ok=True)
    wanted = [BY_NAME[n] for n in args.only] if args.only else SUITE
    chosen = [b for b in wanted if not args.smoke or b.smoke is not None]
    failed = []
    for b in chosen:
        with console.status(f"[bold]{b.name}[/]: {b.what}"):
            code, wall = run_one(b, args.smoke, out)
        status = "[green]done[/]" if code == 0 else f"[red]exit {code}[/]"
        console.print(f"{b.name}: {status} in {wall:.0f} s (log {out / (b.name + '.log')})")
        if code != 0:
            failed.append(b.name)
    summary = summarize(out, args.smoke, machine())
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    body = markdown(summary)
    (out / "summary.md").write_text(body)
    table = Table(title="Targets" + (" (smoke run: not comparable)" if args.smoke else ""))
    for col in ("target", "goal", "measured", "met"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for r in summary["targets"]:
        table.add_row(*cells(r))
    console.print(table)
    if args.write:
        write_section(REPO_ROOT / "BENCHMARKS.md", body)
        console.print(f"BENCHMARKS.md: summary section updated from {out}")
    if failed:
        console.print(f"[red]failed:[/] {', '.join(failed)}; see their logs in {out}")
        return 1
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    sys.exit(run(p.parse_args()))


if __name__ == "__main__":
    main()
