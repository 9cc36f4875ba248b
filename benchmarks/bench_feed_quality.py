"""The whole feed against the oracle: does FPRs -> SPR -> rules beat simple feeds and each FPR alone?

    python -m benchmarks.bench_feed_quality                    # 2,000 members, 20,000 requests, 400 evaluated
    python -m benchmarks.bench_feed_quality --json out.json    # also the full report as JSON
    python -m benchmarks.bench_feed_quality --smoke            # a tiny world and small models, seconds
    python -m benchmarks.bench_feed_quality --rule-variants benchmarks/rule_variants.toml
                                                               # also other rule settings, same requests
    python -m benchmarks.bench_feed_quality --calibration-only --members 6000 --requests 180000
                                                               # the SPR's held-out O/E only, on a big world

Simulates a world, trains every configured FPR on the first half of its time and the second pass on the
next 20% (stacked: the SPR learns from out-of-sample FPR scores), both from the simulator's log and
from a served log of ``--served-requests`` requests (``evaluation.served_log``: the FPRs' answers as
the deployed system would log them, in a random order, clicks from the truth), and
for held-out feed requests builds the feed as the mixer would (``evaluation.feed_oracle``). Rankings
of the same candidates are scored by expected engagement under the ground truth (expected clicks on a
slate of 10) and NDCG@10 against the oracle's ordering; the SPR's calibration (O/E) on the held-out
rows of both logs is shown overall and per source, against the clicks (with its 95% interval) and against the
truth's click probability. ``--calibration-only`` stops after training: a world large enough for the
held-out clicks to pin O/E to a few percent per source costs too much to replay request by request.
"""

from __future__ import annotations

import argparse
import json
import time
import tomllib
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.bench_simulator import machine
from evaluation.feed_oracle import ORACLE, evaluate_feed, train_system
from evaluation.fpr_oracle import simulate
from feedrank.progress import progress_bar
from feedrank.settings import REPO_ROOT
from rankers.registry import load_config
from simulator.world import DAY

# Requests logged as the deployed system would log them (``evaluation.served_log``), for the SPR's
# training and a second held-out calibration; about 0.03-0.05 s each at 2,000-4,000 members.
SERVED_REQUESTS = 8000

# Small models for --smoke (what the unit test uses): the tiny world trains in seconds.
SMOKE_PARAMS: dict[str, dict[str, Any]] = {
    "network": {"n_estimators": 100},
    "jobs": {"minilm": False, "tower_epochs": 4, "p2v_epochs": 5, "lgb_n_estimators": 100},
    "courses": {"epochs": 4, "passes": 2},
    "people": {"epochs": 10},
}


def run(
    members: int,
    requests: int,
    eval_requests: int,
    seed: int,
    params: dict[str, dict[str, Any]] | None = None,
    rule_ablation: bool = True,
    fpr_frac: float = 0.5,
    train_frac: float = 0.7,
    calibration_only: bool = False,
    days: float = 7.0,
    rule_variants: dict[str, dict[str, Any]] | None = None,
    served_requests: int = 0,
    fpr_retrain_days: float | None = None,
) -> dict[str, Any]:
    """``rule_variants``: name -> rule overrides (``PipelineConfig.with_rules``), each scored on the same
    requests as the shipped rules."""
    config = load_config(REPO_ROOT / "config/pipeline.toml")
    variants = {name: config.with_rules(over) for name, over in (rule_variants or {}).items()}
    retrain_s = None if fpr_retrain_days is None else fpr_retrain_days * DAY
    t0 = time.perf_counter()
    with progress_bar() as progress:
        sw = simulate(members=members, requests=requests, days=days, seed=seed, progress=progress)
        t_sim = time.perf_counter() - t0
        if calibration_only:
            system = train_system(
                sw,
                train_frac,
                params=params,
                progress=progress,
                fpr_frac=fpr_frac,
                served_requests=served_requests,
                seed=seed,
                fpr_retrain_s=retrain_s,
            )
            report = {
                "spr_holdout": system.spr_holdout,
                "fpr_train_metrics": system.fpr_metrics,
                "world": {"description": sw.traffic.description, "events": len(sw.traffic.events)},
            }
        else:
            report = evaluate_feed(
                sw,
                train_frac=train_frac,
                fpr_frac=fpr_frac,
                n_requests=eval_requests,
                seed=seed,
                progress=progress,
                params=params,
                rule_ablation=rule_ablation,
                config=config,
                variants=variants,
                served_requests=served_requests,
                fpr_retrain_s=retrain_s,
            )
    report["machine"] = machine()
    report["args"] = {
        "members": members,
        "requests": requests,
        "eval_requests": eval_requests,
        "seed": seed,
        "fpr_frac": fpr_frac,
        "train_frac": train_frac,
        "days": days,
        "served_requests": served_requests,
        "fpr_retrain_days": fpr_retrain_days,
    }
    report["params"] = params or {}
    report["wall_s"] = {"simulate": round(t_sim, 1), "total": round(time.perf_counter() - t0, 1)}
    return report


def _f(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def render(report: dict[str, Any], console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped to a file: wide enough for the tables' columns
            console = Console(width=140)
    if "rankings" in report:
        render_feed(report, console)
    render_calibration(report, console)
    console.print(f"machine: {report['machine']}; wall time: {report['wall_s']}")


def _ci(m: dict[str, Any]) -> str:
    low, high = m.get("o_over_e_ci", (float("nan"), float("nan")))
    return f"{low:.3f}-{high:.3f}"


def render_feed(report: dict[str, Any], console: Console) -> None:
    k = report["k"]
    rankings = report["rankings"]
    system = rankings["system"]["expected_engagement"]
    table = Table(
        title=f"Feed quality on {report['requests']} held-out requests ({report['world']['description']})",
        caption=(
            f"expected engagement: expected clicks on a slate of {report['slate']} under the ground truth; "
            f"NDCG@{k}: truth's relevance as gain, the oracle's order of the union of all FPRs' candidates "
            f"(mean {report['mean_union_size']:.0f}) as ideal; system - this: paired per request, ± its standard error"
        ),
    )
    cols = ("ranking", "expected engagement", "share of oracle", f"NDCG@{k}", "system vs this", "system - this (± se)")
    for col in cols:
        table.add_column(col, justify="left" if col == "ranking" else "right")
    for name, m in sorted(rankings.items(), key=lambda kv: -kv[1]["expected_engagement"]):
        ee = m["expected_engagement"]
        vs, diff = "", ""
        if name != "system":
            vs = f"{(system / ee - 1) * 100:+.1f}%" if ee > 0 else "inf"
            diff = f"{m['system_minus_this']:+.3f} ± {m['system_minus_this_se']:.3f}"
        style = "bold" if name == "system" else "dim" if name == ORACLE else None
        table.add_row(name, _f(ee), _f(m["share_of_oracle"]), _f(m[f"ndcg@{k}"]), vs, diff, style=style)
    console.print(table)

    if report.get("rule_ablation"):
        base = rankings["system (no exploration)"]
        abl = Table(
            title="Each rule's effect: the feed (no exploration) without that one rule",
            caption="rule's effect: expected engagement with all rules minus without this one (< 0: the rule costs)",
        )
        for col in ("without", "expected engagement", "share of oracle", f"NDCG@{k}", "rule's effect"):
            abl.add_column(col, justify="left" if col == "without" else "right")
        abl.add_row("(all rules)", _f(base["expected_engagement"]), _f(base["share_of_oracle"]), _f(base[f"ndcg@{k}"]))
        for rule, m in report["rule_ablation"].items():
            effect = base["expected_engagement"] - m["expected_engagement"]
            abl.add_row(
                rule, _f(m["expected_engagement"]), _f(m["share_of_oracle"]), _f(m[f"ndcg@{k}"]), f"{effect:+.3f}"
            )
        console.print(abl)
    if report.get("rule_variants"):
        fprs = [n for n in rankings if n.startswith("fpr:")]
        best = max(fprs, key=lambda n: rankings[n]["expected_engagement"])
        var = Table(
            title=f"Other rule settings on the same requests, against the system and the best FPR alone ({best})",
            caption="differences paired per request, ± one standard error",
        )
        cols = ("variant", "expected engagement", f"NDCG@{k}", "- system", f"- {best}", f"NDCG@{k} - {best}")
        for col in cols:
            var.add_column(col, justify="left" if col == "variant" else "right")
        for name, m in report["rule_variants"].items():
            vs_sys, vs_best = m["minus"]["system"]["engagement"], m["minus"][best]
            var.add_row(
                name,
                _f(m["expected_engagement"]),
                _f(m[f"ndcg@{k}"]),
                f"{vs_sys[0]:+.3f} ± {vs_sys[1]:.3f}",
                f"{vs_best['engagement'][0]:+.3f} ± {vs_best['engagement'][1]:.3f}",
                f"{vs_best[f'ndcg@{k}'][0]:+.3f} ± {vs_best[f'ndcg@{k}'][1]:.3f}",
            )
        console.print(var)
    share = ", ".join(f"{s} {v:.0%}" for s, v in report["feed_share_by_source"].items())
    console.print(f"feed slots by source: {share}; mean feed size {report['mean_feed_size']:.1f}")
    console.print(f"dropped by rule (items): {report['dropped_by_rule']}")
    console.print(f"feed violations: {report['feed_violations']}; explored requests: {report['explored_requests']}")


def render_calibration(report: dict[str, Any], console: Console) -> None:
    spr = report["spr_holdout"]
    render_holdout(spr, "the simulator's log", console)
    if "served" in spr:
        render_holdout(spr["served"], "the served log (the FPRs' answers, random order)", console)


def render_holdout(spr: dict[str, Any], logged_by: str, console: Console) -> None:
    cal = Table(
        title=(
            f"SPR on held-out rows of {logged_by}: AUC {spr['auc']:.3f}, log loss {spr['log_loss']:.4f} "
            f"({spr['rows_train']:.0f} train rows, {spr['rows_test']:.0f} held out)"
        ),
        caption=(
            "O/E > 1: the SPR under-predicts. 95% interval: clustered by request, the clicks' sampling noise alone. "
            "Against true_p: the same ratio without that noise."
        ),
    )
    for col in ("source", "rows", "engaged", "O/E (clicks)", "95% interval", "O/E (true_p)"):
        cal.add_column(col, justify="left" if col == "source" else "right")
    for src, m in spr["by_source"].items():
        cal.add_row(
            src,
            f"{m['rows']:.0f}",
            f"{m['engaged']:.0f}",
            _f(m["o_over_e"]),
            _ci(m),
            _f(m.get("o_over_e_true_p", float("nan"))),
        )
    engaged = sum(m["engaged"] for m in spr["by_source"].values())
    cal.add_row(
        "overall",
        f"{spr['rows_test']:.0f}",
        f"{engaged:.0f}",
        _f(spr["o_over_e"]),
        _ci(spr),
        _f(spr.get("o_over_e_true_p", float("nan"))),
        style="bold",
    )
    console.print(cal)
    render_by_day(spr.get("by_source_day", []), console)
    render_by_new(spr.get("by_source_new", []), console)
    rates = spr.get("base_rates", {})
    if "train" in rates and "held_out" in rates:
        console.print(
            "click rate, train -> held out: "
            + ", ".join(
                f"{key} {rates['train'][key]:.4f} -> {rates['held_out'][key]:.4f}"
                for key in rates["train"]
                if key in rates["held_out"]
            )
        )


def _oe_key(slices: list[dict[str, Any]]) -> tuple[str, str]:
    """Which ratio a slice table shows, and its title's words: against the truth where every slice has it."""
    if all("o_over_e_true_p" in s for s in slices):
        return "o_over_e_true_p", "against true_p"
    return "o_over_e", "against the clicks"


def render_by_day(slices: list[dict[str, Any]], console: Console) -> None:
    """O/E per source (rows) and UTC day (columns; held-out days marked), against the truth where the
    rows carry it: drift while the FPRs age reads across a row."""
    if not slices:
        return
    key, against = _oe_key(slices)
    days = sorted({(day, held) for _, day, held in (s["value"] for s in slices)})
    table = Table(title=f"O/E by day ({against})")
    table.add_column("source")
    for day, held in days:
        table.add_column(f"{day[5:]}{' held out' if held else ''}", justify="right")
    cells = {(src, day, held): s[key] for s in slices for src, day, held in [s["value"]]}
    for src in sorted({s["value"][0] for s in slices}):
        table.add_row(src, *(_f(cells[(src, d, h)]) if (src, d, h) in cells else "-" for d, h in days))
    console.print(table)


def render_by_new(slices: list[dict[str, Any]], console: Console) -> None:
    """O/E per source of the items new to its FPR and of the others, in training and held out, against
    the truth where the rows carry it: a stale FPR's new items are where its scores age."""
    if not slices:
        return
    key, against = _oe_key(slices)
    table = Table(title=f"O/E of the items new to the FPR ({against}; rows)")
    table.add_column("source")
    parts = [(False, False), (True, False), (False, True), (True, True)]
    for new, held in parts:
        table.add_column(f"{'new' if new else 'older'}{' held out' if held else ''}", justify="right")
    cells = {tuple(s["value"]): s for s in slices}
    for src in sorted({s["value"][0] for s in slices}):
        row = [cells.get((src, new, held)) for new, held in parts]
        table.add_row(src, *(f"{_f(c[key])} ({c['rows']:,})" if c else "-" for c in row))
    console.print(table)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="a tiny world and small models (seconds)")
    p.add_argument("--members", type=int, default=2000)
    p.add_argument("--requests", type=int, default=20_000, help="simulated feed requests (logged traffic)")
    p.add_argument("--eval-requests", type=int, default=400, help="held-out requests whose feeds are evaluated")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--days", type=float, default=7.0, help="simulated time; the world starts empty")
    p.add_argument("--fpr-frac", type=float, default=0.5, help="FPRs train on traffic before this share of time")
    p.add_argument(
        "--train-frac", type=float, default=0.7, help="the SPR trains up to this share; the rest is held out"
    )
    p.add_argument(
        "--served-requests",
        type=int,
        default=SERVED_REQUESTS,
        help="requests from the FPRs' split on logged as the system would serve them (the SPR trains on them "
        "too; 0: the simulator's log only)",
    )
    p.add_argument(
        "--fpr-retrain-days",
        type=float,
        help="retrain every FPR this often from its split on (a team's scheduled job); default: trained once",
    )
    p.add_argument("--no-ablation", action="store_true", help="skip the per-rule ablation")
    p.add_argument("--calibration-only", action="store_true", help="train and report the SPR's held-out O/E; no feeds")
    p.add_argument(
        "--rule-variants",
        type=Path,
        help="a TOML file of other rule settings to score on the same requests (see benchmarks/rule_variants.toml)",
    )
    p.add_argument("--json", type=Path, help="write the full report here")
    args = p.parse_args()
    variants = tomllib.loads(args.rule_variants.read_text()) if args.rule_variants else None
    if args.smoke:
        report = run(
            300,
            3000,
            60,
            args.seed,
            SMOKE_PARAMS,
            not args.no_ablation,
            args.fpr_frac,
            args.train_frac,
            args.calibration_only,
            args.days,
            variants,
            min(args.served_requests, 300),
            args.fpr_retrain_days,
        )
    else:
        report = run(
            args.members,
            args.requests,
            args.eval_requests,
            args.seed,
            rule_ablation=not args.no_ablation,
            fpr_frac=args.fpr_frac,
            train_frac=args.train_frac,
            calibration_only=args.calibration_only,
            days=args.days,
            rule_variants=variants,
            served_requests=args.served_requests,
            fpr_retrain_days=args.fpr_retrain_days,
        )
    render(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
