"""`feedrank eval oe`: calibration of logged predictions, observed over expected, overall and per slice.

    feedrank eval oe --log LOG [--label clicked] [--predicted predicted] [--by COLUMN[,COLUMN...]]...
                     [--bins 10] [--cluster request_id|none] [--json] [--report DIR]

Reads any log in the logged-traffic format (Parquet or CSV; only the label and prediction columns are
needed, plus the ``--by`` columns; ``--by day`` or ``--by hour`` reads ``timestamp`` instead where the log
has no such column). Definitions and the interval: :mod:`evaluation.observed_expected`.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from evaluation.observed_expected import OEResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", required=True, help="the logged traffic: .parquet or .csv")
    parser.add_argument("--label", default="clicked", help="the observed engagement, a 0/1 column (default clicked)")
    parser.add_argument(
        "--predicted", default="predicted", help="the predicted probability of --label (default predicted)"
    )
    parser.add_argument(
        "--by",
        action="append",
        default=[],
        metavar="COLUMN",
        help="O/E per value of a column (source, item_type, position, any; day or hour: of the timestamp, "
        "UTC); repeat for several tables; a,b slices by both jointly",
    )
    parser.add_argument(
        "--bins", type=int, default=10, help="reliability table: quantile bins of the prediction (default 10)"
    )
    parser.add_argument(
        "--cluster",
        default="request_id",
        help="rows of one value are correlated: the interval is clustered by it when the log has it "
        "(default request_id; 'none': every row independent)",
    )
    parser.add_argument(
        "--max-slices", type=int, default=30, help="terminal and report: the N largest slices (default 30)"
    )
    parser.add_argument("--json", action="store_true", help="print only JSON")
    parser.add_argument("--report", metavar="DIR", help="write report.md and its plots into DIR")


def run(args: argparse.Namespace) -> int:
    from evaluation.observed_expected import TIME_BUCKETS, evaluate_oe, with_time_buckets
    from simulator.logs import LogFormatError, read_columns

    try:
        by = [[c.strip() for c in entry.split(",") if c.strip()] for entry in args.by]
        if any(not cols for cols in by):
            raise ValueError("--by needs a column name")
        cluster = None if args.cluster.lower() == "none" else args.cluster
        chosen = cluster if cluster and cluster != "request_id" else None  # named explicitly: must exist
        named = list(dict.fromkeys(c for cols in by for c in cols))
        times = [c for c in named if c in TIME_BUCKETS]  # the log's own column if it has one, else derived
        frame = read_columns(
            args.log,
            [args.label, args.predicted],
            present=[*(c for c in named if c not in times), *([chosen] if chosen else [])],  # a null is a slice
            optional=[*([cluster] if cluster else []), "true_p", *times, *(["timestamp"] if times else [])],
        )
        frame = with_time_buckets(frame, [c for c in times if c not in frame])
        result = evaluate_oe(frame, label=args.label, predicted=args.predicted, by=by, bins=args.bins, cluster=cluster)
    except (LogFormatError, ValueError) as err:
        print(f"feedrank eval oe: {err}", file=sys.stderr)
        return 2
    from evaluation.command_output import emit

    return emit(
        "oe",
        result.to_json(),
        args.json,
        lambda: _print(result, args.max_slices),
        args.report,
        lambda: _report(result, frame, args),
    )


def _fmt(v: Any, digits: int = 3) -> str:
    """Display numbers as strings, so the terminal and the report show the same digits."""
    import math

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.{digits}f}"


def _ci(low: Any, high: Any, digits: int = 3) -> str:
    text = f"{_fmt(low, digits)}-{_fmt(high, digits)}"
    return "-" if text == "---" else text


def _stats_columns(t: pd.DataFrame | pd.Series) -> dict[str, Any]:
    """The columns of an O/E table row as displayed: counts as integers, ratios with 3 decimals."""
    import numpy as np

    def col(name: str) -> list[Any]:
        return list(np.atleast_1d(np.asarray(t[name])))

    out = {
        "rows": [f"{int(v):,}" for v in col("rows")],
        "observed": [_fmt(v, 0 if float(v).is_integer() else 2) for v in col("observed")],
        "expected": [_fmt(v, 1) for v in col("expected")],
        "O/E": [_fmt(v) for v in col("o_over_e")],
        "95% CI": [_ci(lo, hi) for lo, hi in zip(col("ci_low"), col("ci_high"), strict=True)],
    }
    if "o_over_e_true_p" in t:
        out["O/E vs true_p"] = [_fmt(v) for v in col("o_over_e_true_p")]
    return out


def _slice_frame(table: pd.DataFrame, name: str, limit: int) -> pd.DataFrame:
    """A ``--by`` table as printed and written to the report: the largest slices, in value order."""
    import pandas as pd

    from evaluation.observed_expected import largest_slices, slice_label

    t = largest_slices(table, limit)
    return pd.DataFrame({name: [slice_label(v) for v in t["value"]], **_stats_columns(t)})


def _overall_frame(result: OEResult) -> pd.DataFrame:
    import pandas as pd

    o = result.overall
    return pd.DataFrame({**_stats_columns(o), "clusters": [f"{int(o['clusters']):,}"]})


def _reliability_frame(table: pd.DataFrame, ranges: bool = True) -> pd.DataFrame:
    import pandas as pd

    out: dict[str, Any] = {"bin": [str(b) for b in table["bin"]]}
    if ranges:
        out["predicted range"] = [_ci(lo, hi, 4) for lo, hi in zip(table["low"], table["high"], strict=True)]
    out |= {
        "rows": [f"{int(v):,}" for v in table["rows"]],
        "mean predicted": [_fmt(v, 4) for v in table["mean_predicted"]],
        "observed rate": [_fmt(v, 4) for v in table["observed_rate"]],
        "95% CI": [_ci(lo, hi, 4) for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)],
        "O/E": [_fmt(v) for v in table["o_over_e"]],
    }
    if "mean_true_p" in table:
        out["mean true_p"] = [_fmt(v, 4) for v in table["mean_true_p"]]
    return pd.DataFrame(out)


def _print(result: OEResult, limit: int) -> None:
    from evaluation.command_output import console as make_console
    from evaluation.command_output import rich_table

    console = make_console()
    clustered = f"clustered by {result.cluster}" if result.cluster else "rows independent"
    console.print(
        rich_table(
            f"O/E of {result.predicted} for {result.label} (>1: the model under-predicts)",
            _overall_frame(result),
            f"95% interval: delta method, {clustered}",
        )
    )
    for name, table in result.by.items():
        more = f"the {limit} largest of {len(table)} slices; --json has all" if len(table) > limit else ""
        console.print(rich_table(f"O/E by {name}", _slice_frame(table, name, limit), more))
    console.print(
        rich_table(
            "Reliability (quantile bins of the prediction)",
            _reliability_frame(result.reliability, ranges=False),
            "95% CI: Wilson interval of the observed rate",
        )
    )


def _report(result: OEResult, frame: pd.DataFrame, args: argparse.Namespace) -> Any:
    import numpy as np
    import pandas as pd

    from evaluation.observed_expected import reliability_figure, slice_figure
    from evaluation.report import Report

    clustered = (
        f"clustered by `{result.cluster}` (rows of one {result.cluster} are correlated)"
        if result.cluster
        else "every row independent"
    )
    report = Report(f"Calibration: O/E of `{result.predicted}` for `{result.label}`")
    report.add_text(
        f"Log `{args.log}`, {result.rows:,} rows. O/E = sum of observed `{result.label}` / sum of "
        f"`{result.predicted}`: 1 is calibrated, above 1 the model under-predicts, below 1 it over-predicts. "
        f"95% intervals: delta method for a ratio, {clustered}."
        + (
            " `O/E vs true_p` compares the predictions with the ground-truth probabilities the log carries: "
            "the same ratio without the noise of the clicks."
            if "o_over_e_true_p" in result.overall
            else ""
        )
    )
    report.add_table("Overall", _overall_frame(result))
    p = pd.to_numeric(frame[result.predicted]).to_numpy(dtype=np.float64)
    report.add_figure("Reliability diagram", reliability_figure(result.reliability, p))
    report.add_table("Reliability table", _reliability_frame(result.reliability))
    report.add_text(
        f"{len(result.reliability)} bins at the quantiles of `{result.predicted}` (about equal rows each); "
        "the interval of the observed rate is Wilson's."
    )
    for name, table in result.by.items():
        report.add_figure(f"O/E by {name}", slice_figure(table, name, args.max_slices))
        report.add_table(f"O/E by {name} (table)", _slice_frame(table, name, args.max_slices))
        if len(table) > args.max_slices:
            report.add_text(f"The {args.max_slices} largest of {len(table)} slices; `--json` lists all.")
    return report
