"""`feedrank eval replay`: the off-policy value of a policy on logged traffic (replay, IPS, SNIPS, DR).

The policy is a table (``request_id, position, item_id, probability``; CSV or Parquet) or a ranker
configuration of this project (``spr``, ``spr/VERSION``), which is run over the logged requests to
produce that table. Estimates are clicks per logged slot, with request-clustered bootstrap intervals.
Heavy imports happen in :func:`run`: the parser is built on every ``feedrank`` call.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from evaluation.off_policy import OffPolicyResult
    from evaluation.policy_table import JoinedLog
    from evaluation.report import Report

PROG = "feedrank eval replay"
RANKER_SPEC = re.compile(r"^[a-z][a-z0-9_-]*(/\S+)?$")
LABELS = {"logged": "logged", "replay": "replay", "ips": "IPS", "snips": "SNIPS", "dr": "DR"}


class CommandError(ValueError):
    """A problem with the command's arguments; reported like the data errors."""


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", required=True, help="logged traffic, CSV or Parquet (request_id, position, ...)")
    parser.add_argument(
        "--policy",
        required=True,
        help="a table request_id,position,item_id,probability (CSV or Parquet; unlisted rows have probability "
        "0), or a ranker configuration of this project: spr (current version) or spr/VERSION",
    )
    parser.add_argument(
        "--data", help="with a ranker --policy: the `feedrank simulate --out` folder (default: the log's folder)"
    )
    parser.add_argument(
        "--reward",
        metavar="COLUMN",
        help="doubly robust: a reward model's predicted clicks, a column of both the log and the policy table",
    )
    parser.add_argument("--bootstrap", type=_non_negative, default=200, help="request resamples for the intervals")
    parser.add_argument("--seed", type=int, default=0, help="of the bootstrap")
    parser.add_argument("--json", action="store_true", help="print only JSON")
    parser.add_argument("--report", metavar="DIR", help="also write a Markdown report with plots into DIR")


def is_ranker_spec(policy: str) -> bool:
    """``spr`` or ``spr/VERSION``, and nothing that reads as a (missing) table file."""
    if not RANKER_SPEC.match(policy):
        return False
    from evaluation.policy_table import TABLE_SUFFIXES

    path = Path(policy)
    return path.suffix.lower() not in TABLE_SUFFIXES and not Path(path.parts[0]).is_dir()


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (ValueError, OSError) as err:  # data and argument errors; each message names the problem
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from evaluation.off_policy import evaluate
    from evaluation.policy_table import join_policy, read_policy, validate_policy

    spec: str = args.policy
    ranker = not Path(spec).exists() and is_ranker_spec(spec)
    if not ranker and not Path(spec).exists():
        raise CommandError(
            f"policy {spec} is neither an existing table file nor a ranker configuration (spr or spr/VERSION)"
        )
    log = _read_log(Path(args.log), args.reward, every_column=ranker)
    notes: list[str] = []
    if ranker:
        try:
            from evaluation.ranker_policy import ranker_policy_table
        except ImportError as err:
            raise CommandError(f"cannot evaluate the ranker configuration {spec}: {err}") from None
        data = Path(args.data) if args.data else Path(args.log).parent
        table = ranker_policy_table(log, spec, data=data)
        notes += _ranker_notes(table)
        source = f"policy of {spec}"
        policy = validate_policy(table, source=source, reward=args.reward, check_keys=False)
    else:
        source = f"policy {spec}"
        policy = read_policy(spec, reward=args.reward, check_keys=False)
    joined = join_policy(log, policy, reward=args.reward, source=source)  # checks the policy's keys
    result = evaluate(
        joined.clicked,
        joined.propensity,
        joined.probability,
        joined.clusters,
        joined.reward_logged,
        joined.direct,
        n_boot=args.bootstrap,
        seed=args.seed,
    )
    result.notes.extend(notes + _join_notes(joined, len(policy)))
    doc = {**result.to_json(), "policy_rows_ignored": joined.ignored_policy_rows}
    from evaluation.command_output import emit

    return emit(
        "replay",
        doc,
        args.json,
        lambda: _print_table(args, result),
        args.report,
        lambda: _build_report(args, result, joined),
    )


def _read_log(path: Path, reward: str | None, every_column: bool) -> pd.DataFrame:
    """The log's evaluation columns (all of them for a ranker, which reruns the requests)."""
    from simulator.logs import REQUIRED_COLUMNS, LogFormatError, read_log

    required = [*REQUIRED_COLUMNS, *([reward] if reward and reward not in REQUIRED_COLUMNS else [])]
    log = read_log(path, columns=None if every_column else required, required=required)
    if len(log) == 0:
        raise LogFormatError(f"log {path} has no rows")
    return log


def _ranker_notes(table: pd.DataFrame) -> list[str]:
    attrs = getattr(table, "attrs", {}) or {}
    notes = []
    if "coverage" in attrs:
        notes.append(
            f"the policy's items appear in their request's log for {attrs['coverage']:.1%} of its slots "
            f"(at the same position: {attrs.get('exact_coverage', float('nan')):.1%}); "
            "estimates cover only that overlap"
        )
    return notes


def _join_notes(joined: JoinedLog, policy_rows: int) -> list[str]:
    notes = []
    if joined.ignored_policy_rows:
        notes.append(
            f"{joined.ignored_policy_rows} of {policy_rows} policy row(s), for {joined.ignored_policy_requests} "
            "request(s) absent from the log, were ignored"
        )
    if joined.uncovered_slots:
        notes.append(
            f"the policy table has no row for {joined.uncovered_slots} of {len(joined.clicked)} logged slot(s): "
            "the policy shows nothing there"
        )
    return notes


# ---------------------------------------------------------------------------------------------- output
def _fmt(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:.4f}"


def _print_table(args: argparse.Namespace, result: OffPolicyResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"off-policy value of {args.policy}", caption="clicks per logged slot")
    for col in ("estimator", "value", "95% CI", "note"):
        table.add_column(col, justify="right" if col in ("value", "95% CI") else "left")
    for name, est in result.estimates.items():
        note = f"{result.matched} matched rows" if name == "replay" else ""
        ci = f"[{_fmt(est.ci95[0])}, {_fmt(est.ci95[1])}]" if result.bootstrap else "-"
        table.add_row(LABELS[name], _fmt(est.value), ci, note)
    console = Console()
    console.print(table)
    lines = [
        f"{result.rows} logged rows in {result.requests} requests; intervals from {result.bootstrap} bootstrap "
        "resamples of requests",
        f"effective sample size {result.ess:.1f}, max weight {result.max_weight:.4g}",
        *(f"note: {note}" for note in result.notes),
    ]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _build_report(args: argparse.Namespace, result: OffPolicyResult, joined: JoinedLog) -> Report:
    import pandas as pd

    from evaluation.off_policy import importance_weights
    from evaluation.report import Report

    weights = importance_weights(joined.probability, joined.propensity)
    report = Report(f"Off-policy evaluation of {args.policy}")
    report.add_text(
        f"Log `{args.log}`: {result.rows} logged rows (slots) in {result.requests} requests. "
        f"Policy `{args.policy}`. Each estimate is the expected clicks per logged slot had the evaluated policy "
        "filled the slots instead of the logging policy; `logged` is what the logging policy got. Intervals are "
        f"95% percentile intervals over {result.bootstrap} bootstrap resamples of requests (seed {args.seed}), "
        "since the rows of one request are not independent."
    )
    rows = []
    for name, est in result.estimates.items():
        rows.append(
            {
                "estimator": LABELS[name],
                "value": est.value,
                "ci95 low": est.ci95[0],
                "ci95 high": est.ci95[1],
                "rows used": result.matched if name == "replay" else result.rows,
            }
        )
    report.add_table("Estimates", pd.DataFrame(rows))
    report.add_figure("Estimates against the logged value", _estimates_figure(result))
    nonzero = weights[weights > 0]
    report.add_text(
        f"Importance weights w = policy probability / logging propensity: {len(nonzero)} of {len(weights)} rows "
        f"have w > 0; mean weight {weights.mean():.3f} (about 1 when the logging policy could have shown everything "
        "the policy shows; well below 1 means the policy shows items the log cannot credit), max "
        f"{result.max_weight:.4g}. Effective sample size (sum w)^2 / sum w^2 = "
        f"{result.ess:.1f}: IPS is about as precise as a plain mean over that many rows. A small effective "
        "sample size, or a few weights far larger than the rest, makes IPS unreliable; SNIPS and DR suffer less."
    )
    report.add_figure("Importance weights", _weights_figure(nonzero, len(weights)))
    by_pos = _by_position(joined, weights)
    report.add_table("By position", by_pos)
    report.add_figure("Click rate by position", _position_figure(by_pos))
    if result.notes:
        report.add_text("Notes:\n\n" + "\n".join(f"- {n}" for n in result.notes))
    return report


def _by_position(joined: JoinedLog, weights: Any) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    from evaluation.off_policy import matched_rows

    pos = pd.Series(joined.position)
    frame = pd.DataFrame(
        {
            "position": pos,
            "clicked": joined.clicked,
            "cw": joined.clicked * weights,
            "w": weights,
            "matched": matched_rows(joined.probability).astype(np.float64),
        }
    )
    g = frame.groupby("position", sort=True)
    out = pd.DataFrame(
        {
            "rows": g.size(),
            "logged": g["clicked"].mean(),
            "ips": g["cw"].mean(),
            "snips": g["cw"].sum() / g["w"].sum().replace(0, np.nan),
            "matched": g["matched"].sum().astype(int),
        }
    )
    return out.reset_index()


def _estimates_figure(result: OffPolicyResult) -> Figure:
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 0.6 * len(result.estimates) + 1.5))
    ax = fig.subplots()
    names = list(result.estimates)
    y = np.arange(len(names))[::-1]
    values = np.array([result.estimates[n].value for n in names], dtype=np.float64)
    lo = np.array([result.estimates[n].ci95[0] for n in names], dtype=np.float64)
    hi = np.array([result.estimates[n].ci95[1] for n in names], dtype=np.float64)
    err = np.vstack([np.nan_to_num(values - lo), np.nan_to_num(hi - values)])
    ax.errorbar(values, y, xerr=err, fmt="o", capsize=4, color="tab:blue")
    logged = result.estimates["logged"].value
    ax.axvline(logged, color="grey", linestyle="--", label=f"logged {logged:.4f}")
    ax.set_yticks(y, [LABELS[n] + (f" ({result.matched} matched)" if n == "replay" else "") for n in names])
    ax.set_xlabel("clicks per logged slot (95% bootstrap interval)")
    ax.legend(loc="best")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _weights_figure(nonzero: Any, n_rows: int) -> Figure:
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    values, counts = np.unique(np.round(nonzero, 9), return_counts=True)
    if 0 < len(values) <= 60:  # few distinct weights (e.g. 1/propensity of a uniform log): one bar each
        ax.vlines(values, 0, counts, color="tab:orange", linewidth=3)
        ax.set_ylim(bottom=0)
    elif len(values):
        lo, hi = float(values[0]), float(values[-1])
        wide = hi > 20 * lo
        ax.hist(nonzero, bins=np.geomspace(lo, hi * 1.0001, 40) if wide else 40, color="tab:orange")
        if wide:
            ax.set_xscale("log")
    ax.set_xlabel("importance weight (rows with weight > 0)")
    ax.set_ylabel("rows")
    ax.set_title(f"{len(nonzero)} of {n_rows} rows have a positive weight")
    return fig


def _position_figure(by_pos: pd.DataFrame) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    ax.plot(by_pos["position"], by_pos["logged"], "o-", label="logged")
    ax.plot(by_pos["position"], by_pos["ips"], "s-", label="policy (IPS)")
    ax.set_xlabel("position")
    ax.set_ylabel("clicks per slot")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return fig
