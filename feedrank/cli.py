"""The ``feedrank`` command: infrastructure, services, training, feeds and the demo."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from feedrank.settings import FPR_SHARE, get_settings


def _infra(args: argparse.Namespace) -> int:
    from feedrank import infra

    s = get_settings()
    try:
        if args.action == "up":
            comps = infra.up(s)
            from services.kafka_io import ensure_topics

            ensure_topics(s)
        elif args.action == "down":
            stopped = infra.down(s)
            print("stopped: " + (", ".join(stopped) or "nothing was running"))
            return 0
        else:
            comps = infra.status(s)
    except infra.InfraError as err:
        print(f"feedrank infra {args.action}: {err}", file=sys.stderr)
        return 1
    for c in comps:
        print(c.line())
    return 0 if all(c.reachable for c in comps) else 1


def _serve(args: argparse.Namespace) -> int:
    from rankers.registry import ConfigError
    from services.model_store import ModelNotFound

    try:
        return _serve_one(args)
    except (ModelNotFound, ConfigError) as err:
        print(f"feedrank serve {args.service}: {err}", file=sys.stderr)
        return 1


def _serve_one(args: argparse.Namespace) -> int:
    from services.runtime import limit_native_threads, setup_logging, stop_event

    s = get_settings()
    name: str = args.service
    setup_logging(name)
    limit_native_threads(s.service_threads)
    if name == "features":
        from features.app import main

        sys.argv = [sys.argv[0]]  # faust's worker parses argv itself
        main()
        return 0
    stop = stop_event()
    if name == "mixer" or name.startswith("mixer-"):
        import os

        from services.mixer_service import MixerService

        MixerService(s, worker=f"{name}-{os.getpid()}").run(stop)
    elif name.startswith("fpr-") or name == "fpr":
        from services.fpr_service import build_service

        fpr = args.name if name == "fpr" else name.removeprefix("fpr-")
        if not fpr:
            print("feedrank serve fpr needs --name", file=sys.stderr)
            return 2
        build_service(s, fpr).run(stop)
    elif name == "traffic":
        from services.traffic import SimulatedTraffic
        from services.traffic_service import publish_traffic

        n = publish_traffic(
            s, SimulatedTraffic(members=args.members, requests=args.requests, seed=args.seed), rate=args.rate
        )
        print(f"sent {n} events")
    else:
        print(f"unknown service {name!r}: features, mixer, fpr-NAME, traffic", file=sys.stderr)
        return 2
    return 0


def _feed(args: argparse.Namespace) -> int:
    from services.feed_client import FeedClient, FeedTimeout

    client = FeedClient(get_settings())
    try:
        feed = client.feed(args.member_id, args.size, timeout_s=args.timeout)
    except FeedTimeout as err:
        print(f"feedrank feed: {err}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if args.json:
        print(feed.model_dump_json(indent=2))
    else:
        from services.demo import show

        show(feed)
    return 0


def _train(args: argparse.Namespace) -> int:
    if args.model == "fpr":
        return _train_fprs(args)
    if args.name or args.param or args.until is not None:
        print("feedrank train spr takes no NAME, --param or --until", file=sys.stderr)
        return 2
    from pathlib import Path

    from rankers.registry import ConfigError
    from services.fpr_training import TrafficNotFound, load_traffic
    from services.traffic import SimulatedTraffic
    from services.train_spr import train_spr

    try:
        if args.data:
            traffic = load_traffic(Path(args.data))
            events, description = traffic.events, traffic.description
        else:
            generator = SimulatedTraffic(members=args.members, requests=args.requests, seed=args.seed)
            events, description = list(generator.events()), generator.describe()
        version, metrics = train_spr(get_settings(), events, description)
    except (ConfigError, TrafficNotFound, ValueError) as err:
        print(f"feedrank train spr: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"version": f"spr/{version}", "holdout": metrics}, indent=2))
    return 0


def _explain(args: argparse.Namespace) -> int:
    from services.explain import ExplanationNotFound, load_explanation, render

    try:
        doc = load_explanation(get_settings(), args.request_id)
    except ExplanationNotFound as err:
        print(f"feedrank explain: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        render(doc)
    return 0


def _share(text: str) -> float:
    """A share of the traffic's time, checked before any traffic is loaded or simulated."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a share of the traffic's time must be in (0, 1], got {value}")
    return value


def _params(pairs: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` overrides, VALUE read as TOML (``epochs=3``, ``use_minilm=false``, ``name="x"``)."""
    import tomllib

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {pair!r} must look like KEY=VALUE")
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value  # a bare string
    return out


def _train_fprs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rankers.registry import ConfigError, load_config
    from services.fpr_training import TrafficNotFound, load_traffic, train_fpr
    from services.traffic import SimulatedTraffic

    s = get_settings()
    try:
        names = load_config(s.pipeline_config).fpr_names if args.name in (None, "all") else [args.name]
        params = _params(args.param)
        if args.data:
            traffic = load_traffic(Path(args.data))
        else:
            traffic = SimulatedTraffic(members=args.members, requests=args.requests, seed=args.seed).logged()
        traffic = traffic.first(FPR_SHARE if args.until is None else args.until)
        report = {}
        for name in names:
            version, metrics = train_fpr(s, name, traffic, params, show_progress=not args.quiet)
            report[name] = {"version": version, "metrics": metrics}
            if not args.quiet:
                print(f"fpr {name}: trained fpr-{name}/{version}", file=sys.stderr)
    except (ConfigError, TrafficNotFound, ValueError) as err:
        print(f"feedrank train fpr: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, default=float))
    return 0


def _fpr(args: argparse.Namespace) -> int:
    from rankers.registry import ConfigError, load_config

    try:
        spec = load_config(get_settings().pipeline_config).fpr(args.name)
        sources = [bool(args.interactions), bool(args.edges), args.simulate]
        if sum(sources) != 1:
            print("feedrank fpr evaluate: give exactly one of --interactions, --edges, --simulate", file=sys.stderr)
            return 2
        result = _evaluate_fpr(args, spec)
    except (ConfigError, ValueError) as err:
        print(f"feedrank fpr evaluate: {err}", file=sys.stderr)
        return 2
    data = result.pop("data", None)
    if data is not None:
        print("evaluated on " + ", ".join(f"{k}={int(v)}" for k, v in data.items()), file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2, default=float))
    else:
        _print_evaluation(args.name, result)
    return 0


def _evaluate_fpr(args: argparse.Namespace, spec) -> dict:
    from evaluation import interactions as ev

    if args.interactions:
        return ev.evaluate_interactions(
            spec.build_offline(), ev.read_interactions(args.interactions), k=args.k, max_members=args.max_members
        )
    if args.edges:
        return ev.evaluate_edges(
            spec.build_offline(),
            ev.read_edges(args.edges),
            holdout=args.holdout,
            k=args.k,
            max_members=args.max_members,
        )
    from evaluation.fpr_oracle import oracle_eval, simulate
    from feedrank.progress import progress_bar

    with progress_bar(disable=args.json) as progress:
        sw = simulate(members=args.members, requests=args.requests, seed=args.seed, progress=progress)
        return oracle_eval(
            sw,
            spec.resolve_trainer(),
            lambda m: spec.build(model=m),
            spec.build_baseline(),
            params=_params(args.param),
            k=args.k,
            progress=progress,
        )


def _print_evaluation(name: str, result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fpr {name}")
    table.add_column("ranker")
    metrics = sorted({m for v in result.values() if isinstance(v, dict) for m in v if "@" in m})
    for m in metrics:
        table.add_column(m, justify="right")
    for ranker, values in result.items():
        if isinstance(values, dict) and any("@" in m for m in values):
            table.add_row(ranker, *[f"{values.get(m, float('nan')):.4f}" for m in metrics])
    Console().print(table)


def _demo(args: argparse.Namespace) -> int:
    from services.demo import run_demo

    run_demo(get_settings(), members=args.members, requests=args.requests, feeds=args.feeds)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from simulator.config import SessionConfig, SimulationConfigError, WorldConfig

    live = args.policy == "live"
    try:
        # A live run places the world so that it ends now: the FPRs judge freshness by the wall clock.
        start = {"start_time": time.time() - args.days * 86_400} if live else {}
        world = WorldConfig.build(
            "world",
            seed=args.seed,
            n_members=args.members,
            n_companies=args.companies or max(20, args.members // 50),
            n_courses=args.courses or max(20, args.members // 20),
            horizon_days=args.days,
            block_rate=args.block_rate,
            **start,
        )
        sessions = SessionConfig.build(
            "sessions",
            seed=args.seed,
            n_requests=args.requests,
            slate_size=args.slate_size,
            policy=args.policy,
            epsilon=args.epsilon,
            batch_size=args.batch_size if live else 4096,
        )
    except SimulationConfigError as err:
        print(f"feedrank simulate: {err}", file=sys.stderr)
        return 2
    from services.simulate_service import simulate

    try:
        stats, published = simulate(
            get_settings(),
            world,
            sessions,
            Path(args.out),
            fmt=args.format,
            ranker=args.ranker,
            kafka=args.kafka,
            show_progress=not args.quiet,
        )
    except ValueError as err:
        print(f"feedrank simulate: {err}", file=sys.stderr)
        return 2
    report = {**stats.__dict__, "events_per_s": round(stats.events_per_s), "out": args.out, "published": published}
    print(json.dumps(report, indent=2))
    return 0


# `feedrank eval SUBCOMMAND`: each lives in its own module, which defines add_arguments(parser) and
# run(args) -> exit code, and imports nothing heavy at module level (the parser is built on every call).
EVAL_COMMANDS = {
    "oe": ("evaluation.oe_command", "calibration: observed over expected, overall and per slice"),
    "replay": ("evaluation.replay_command", "off-policy value of a policy on logged traffic: replay, IPS, SNIPS, DR"),
    "ranking": ("evaluation.ranking_command", "ranking metrics of logged scores: AUC, NDCG@k, MAP@k, HR@k"),
}


def _eval(args: argparse.Namespace) -> int:
    return int(importlib.import_module(EVAL_COMMANDS[args.eval_command][0]).run(args))


def _rebuild_online(args: argparse.Namespace) -> int:
    from features.rebuild import changelog_topic, rebuild_online

    s = get_settings()
    started = time.monotonic()
    rows = rebuild_online(s, show_progress=True)
    print(f"wrote {rows} feature rows from {changelog_topic(s)} in {time.monotonic() - started:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="feedrank", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    infra = sub.add_parser("infra", help="local Kafka and Redis")
    infra.add_argument("action", choices=["up", "down", "status"])
    infra.set_defaults(func=_infra)

    serve = sub.add_parser("serve", help="run one service: features, mixer, fpr-NAME, traffic")
    serve.add_argument("service")
    serve.add_argument("--name", help="FPR name, with 'serve fpr'")
    serve.add_argument("--members", type=int, default=2000)
    serve.add_argument("--requests", type=int, default=3000, help="simulated feed requests")
    serve.add_argument("--seed", type=int, default=7)
    serve.add_argument("--rate", type=float, default=None, help="traffic: events per second")
    serve.set_defaults(func=_serve)

    feed = sub.add_parser("feed", help="request a member's feed and print it")
    feed.add_argument("member_id")
    feed.add_argument("--json", action="store_true")
    feed.add_argument("--size", type=int, default=None)
    feed.add_argument("--timeout", type=float, default=15.0)
    feed.set_defaults(func=_feed)

    train = sub.add_parser("train", help="train a model: spr, or fpr NAME (or all)")
    train.add_argument("model", choices=["spr", "fpr"])
    train.add_argument("name", nargs="?", help="fpr: the FPR to train, or all (default)")
    train.add_argument("--data", help="a `feedrank simulate --out` folder to train on (default: simulate)")
    train.add_argument("--param", action="append", default=[], help="fpr: KEY=VALUE override of its config.toml")
    train.add_argument(
        "--until",
        type=_share,
        help=f"fpr: train on this first share of the traffic's time (default {FPR_SHARE}); `train spr` learns"
        " from what comes after, so the second pass sees scores of traffic the FPRs did not train on",
    )
    train.add_argument("--quiet", action="store_true")
    train.add_argument("--members", type=int, default=2000)
    train.add_argument("--requests", type=int, default=3000, help="simulated feed requests")
    train.add_argument("--seed", type=int, default=7)
    train.set_defaults(func=_train)

    rebuild = sub.add_parser(
        "rebuild-online", help="rewrite every online feature row from Kafka (after Redis lost data)"
    )
    rebuild.set_defaults(func=_rebuild_online)

    explain = sub.add_parser("explain", help="why each item of a served feed is where it is")
    explain.add_argument("request_id")
    explain.add_argument("--json", action="store_true")
    explain.set_defaults(func=_explain)

    fpr = sub.add_parser("fpr", help="first-pass rankers: offline evaluation")
    fpr_sub = fpr.add_subparsers(dest="fpr_command", required=True)
    ev = fpr_sub.add_parser(
        "evaluate",
        help="leave-last-out HR/NDCG on an interaction file, held-out edges, or the simulator's oracle",
    )
    ev.add_argument("name", help="a configured FPR")
    ev.add_argument("--interactions", help="CSV or Parquet: member_id,item_id,timestamp[,label]")
    ev.add_argument("--edges", help="people: CSV or Parquet of member_a,member_b")
    ev.add_argument("--simulate", action="store_true", help="train on a simulated world, compare with the oracle")
    ev.add_argument("--k", type=int, default=10)
    ev.add_argument("--holdout", type=float, default=0.1, help="edges: share held out")
    ev.add_argument("--max-members", type=int, default=None, help="evaluate a seeded sample of members")
    ev.add_argument("--members", type=int, default=2000, help="--simulate: world size")
    ev.add_argument("--requests", type=int, default=20000, help="--simulate: feed requests")
    ev.add_argument("--seed", type=int, default=11)
    ev.add_argument("--param", action="append", default=[], help="--simulate: KEY=VALUE trainer override")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=_fpr)

    sim = sub.add_parser("simulate", help="simulate a professional network: member events and logged traffic")
    sim.add_argument("--members", type=int, default=5000)
    sim.add_argument("--companies", type=int, default=None, help="default: members / 50")
    sim.add_argument("--courses", type=int, default=None, help="default: members / 20")
    sim.add_argument("--requests", type=int, default=20000, help="feed requests over the horizon")
    sim.add_argument("--days", type=float, default=7.0, help="simulated horizon")
    sim.add_argument("--block-rate", type=float, default=0.01)
    sim.add_argument("--slate-size", type=int, default=10)
    sim.add_argument(
        "--policy",
        choices=["uniform", "epsilon-greedy", "live"],
        default="uniform",
        help="logging policy: uniform (for replay), epsilon-greedy around --ranker, or live: the running "
        "pipeline's feeds, in its order and with its propensities (implies --kafka)",
    )
    sim.add_argument(
        "--epsilon",
        type=float,
        default=0.1,
        help="exploration rate of epsilon-greedy (live: the mixer's exploration rule in config/pipeline.toml decides)",
    )
    sim.add_argument(
        "--ranker",
        choices=["popularity", "oracle"],
        default="popularity",
        help="the ranking epsilon-greedy explores around",
    )
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--kafka", action="store_true", help="also publish every event to member-events")
    sim.add_argument("--batch-size", type=int, default=64, help="live: feed requests in flight at once")
    sim.add_argument("--format", choices=["parquet", "csv"], default="parquet", help="of the impression log")
    sim.add_argument("--out", default="simulation", help="output folder")
    sim.add_argument("--quiet", action="store_true")
    sim.set_defaults(func=_simulate)

    ev_parser = sub.add_parser("eval", help="offline evaluation of logged traffic from this or any system")
    ev_sub = ev_parser.add_subparsers(dest="eval_command", required=True)
    for name, (module, help_text) in EVAL_COMMANDS.items():
        command = ev_sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(command)
        command.set_defaults(func=_eval)

    demo = sub.add_parser("demo", help="everything end to end, printing a few ranked feeds")
    demo.add_argument("--members", type=int, default=2000)
    demo.add_argument("--requests", type=int, default=3000, help="simulated feed requests")
    demo.add_argument("--feeds", type=int, default=3)
    demo.set_defaults(func=_demo)

    from benchmarks import suite

    bench = sub.add_parser(
        "bench",
        help="the benchmark suite: feed latency, feature throughput and freshness, reads, evaluation",
        description=suite.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    suite.add_arguments(bench)
    bench.set_defaults(func=_bench)
    return p


def _bench(args: argparse.Namespace) -> int:
    from benchmarks import suite

    return suite.run(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
