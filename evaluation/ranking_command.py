"""`feedrank eval ranking`: how well a logged score ranks each request's items (AUC, NDCG@k, MAP@k, HR@k).

    feedrank eval ranking --log LOG [--score predicted] [--label clicked] [--group request_id]
                          [--k 5 --k 10] [--json] [--report DIR]

Any numeric column can be the score (higher ranks first) and any non-negative column the label (graded
labels count as gains in NDCG, as ``label > 0`` elsewhere). Conventions: :mod:`evaluation.ranking_metrics`.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from evaluation.ranking_metrics import RankingResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", required=True, help="the logged traffic: .parquet or .csv")
    parser.add_argument("--score", default="predicted", help="the ranking score, higher first (default predicted)")
    parser.add_argument("--label", default="clicked", help="relevance: 0/1 or graded >= 0 (default clicked)")
    parser.add_argument("--group", default="request_id", help="what is ranked together (default request_id)")
    parser.add_argument(
        "--k", type=int, action="append", default=None, help="cut-off for NDCG/MAP/HR; repeatable (default 5 and 10)"
    )
    parser.add_argument("--json", action="store_true", help="print only JSON")
    parser.add_argument("--report", metavar="DIR", help="write report.md and its plot into DIR")


def run(args: argparse.Namespace) -> int:
    from simulator.logs import LogFormatError, read_columns

    ks = args.k or [5, 10]
    try:
        if min(ks) < 1:
            raise ValueError("--k must be at least 1")
        frame = read_columns(args.log, [args.group, args.score, args.label])
        from evaluation.ranking_metrics import evaluate_ranking

        result = evaluate_ranking(frame, score=args.score, label=args.label, group=args.group, ks=ks)
    except (LogFormatError, ValueError) as err:
        print(f"feedrank eval ranking: {err}", file=sys.stderr)
        return 2
    from evaluation.command_output import emit

    return emit(
        "ranking", result.to_json(), args.json, lambda: _print(result), args.report, lambda: _report(result, args.log)
    )


def _fmt(v: float) -> str:
    return "-" if v != v else f"{v:.4f}"  # NaN != NaN


def _auc_frame(result: RankingResult) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            "metric": ["AUC (pooled over rows)", f"gAUC (mean over {result.group}s)"],
            "value": [_fmt(result.metrics["auc"]), _fmt(result.metrics["gauc"])],
        }
    )


def _at_k_frame(result: RankingResult) -> pd.DataFrame:
    """One row per k."""
    import pandas as pd

    return pd.DataFrame(
        {
            "k": [str(k) for k in result.ks],
            **{
                f"{title}@k": [_fmt(result.metrics[f"{name}@{k}"]) for k in result.ks]
                for name, title in (("ndcg", "NDCG"), ("map", "MAP"), ("hr", "HR"))
            },
        }
    )


def _groups_text(result: RankingResult) -> str:
    return (
        f"{result.rows:,} rows in {result.groups:,} groups ({result.group}); "
        f"{result.groups_with_positive:,} with a relevant row (NDCG, MAP and HR average over these), "
        f"{result.groups - result.groups_with_positive:,} without; "
        f"{result.groups_with_both_classes:,} with both classes (gAUC averages over these)"
    )


def _print(result: RankingResult) -> None:
    from evaluation.command_output import console as make_console
    from evaluation.command_output import rich_table

    console = make_console()
    console.print(rich_table(f"Ranking by {result.score} against {result.label}", _auc_frame(result)))
    console.print(rich_table(f"At cut-off k, per {result.group}", _at_k_frame(result)))
    console.print(_groups_text(result), highlight=False)


def _report(result: RankingResult, log: str) -> Any:
    from evaluation.ranking_metrics import metrics_figure
    from evaluation.report import Report

    report = Report(f"Ranking metrics: `{result.score}` against `{result.label}`")
    report.add_text(
        f"Log `{log}`: {_groups_text(result)}. Each group is ranked by `{result.score}`, highest first. "
        "AUC is pooled over all rows; gAUC is the mean of each group's AUC. NDCG@k follows scikit-learn's "
        "`ndcg_score` (linear gain, 1/log2(rank+1) discount, tied scores share their average gain). "
        "MAP@k = mean of AP@k = (1/min(k, R)) Σ P@i·rel_i; HR@k = share of groups with a relevant row in "
        "the top k; both break ties pessimistically (non-relevant first)."
    )
    report.add_table("AUC", _auc_frame(result))
    report.add_table("At cut-off k", _at_k_frame(result))
    report.add_figure("Metrics by k and relevant rows by rank", metrics_figure(result))
    return report
