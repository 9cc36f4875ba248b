"""``feedrank demo``: infrastructure, a trained mixer, every service, traffic, and a few ranked feeds."""

from __future__ import annotations

import time
from collections import Counter

from rich.console import Console
from rich.table import Table

from features.store import apply_definitions
from feedrank import infra
from feedrank.contracts import RankedFeed
from feedrank.settings import FPR_SHARE, Settings
from rankers.mixer.spr import SCHEMA
from rankers.registry import load_config
from services.feed_client import FeedClient, FeedTimeout
from services.fpr_service import load_trained
from services.fpr_training import train_fpr
from services.kafka_io import ensure_topics
from services.model_store import ModelNotFound, ModelStore, load_spr
from services.supervisor import Supervisor, pipeline_services
from services.traffic import SimulatedTraffic
from services.traffic_service import publish_traffic
from services.train_spr import train_spr

console = Console()


def prepare(settings: Settings, generator: SimulatedTraffic, retrain: bool = False) -> None:
    """Idempotent set-up shared by the demo and the tests: infra, topics, Feast registry, SPR model."""
    for c in infra.up(settings):
        console.print(f"[green]infra[/] {c.line()}")
    ensure_topics(settings)
    apply_definitions(settings)
    # The second pass learns from the traffic after the FPR models' (stacking in time): new FPR models
    # change the scores it learned from, and a new second pass needs FPR models trained on the first
    # part of the same traffic. So either is retrained with the other.
    spr_serves = not retrain and _spr_serves(settings)
    if train_missing_fprs(settings, generator, retrain=not spr_serves) or not spr_serves:
        with console.status("training the second-pass model"):
            version, metrics = train_spr(settings, generator.events(), generator.describe())
        console.print(
            f"[green]spr[/] trained {version}: held-out AUC {metrics['auc']:.3f}, "
            f"O/E {metrics['o_over_e']:.2f} on {int(metrics['rows_test'])} rows"
        )


def _spr_serves(settings: Settings) -> bool:
    try:
        load_spr(ModelStore(settings.model_dir), SCHEMA)
    except ModelNotFound:
        return False
    return True


def train_missing_fprs(settings: Settings, generator: SimulatedTraffic, retrain: bool = False) -> bool:
    """Train each configured FPR that has no model it can serve yet (none, or one trained on other
    features than this code computes), on the first ``FPR_SHARE`` of the traffic the demo is about to
    publish (the second pass learns from the rest); whether any was trained."""
    fprs = load_config(settings.pipeline_config).fprs
    missing = [n for n, spec in fprs.items() if spec.trainer and (retrain or load_trained(settings, spec) is None)]
    if not missing:
        return False
    with console.status("simulating the traffic the first-pass rankers train on"):
        traffic = generator.logged().first(FPR_SHARE)  # the rest is the second pass's
    for name in missing:
        version, metrics = train_fpr(settings, name, traffic)
        auc = metrics.get("auc", float("nan"))
        console.print(f"[green]fpr {name}[/] trained {version}: held-out AUC {auc:.3f}")
    return True


def wait_for_full_feed(client: FeedClient, member_id: str, expected: set[str], timeout_s: float) -> RankedFeed:
    """Request until every FPR answers: services take a while to start and catch up on the network."""
    deadline = time.monotonic() + timeout_s
    last: RankedFeed | None = None
    while time.monotonic() < deadline:
        try:
            last = client.feed(member_id, timeout_s=10)
        except FeedTimeout:
            continue
        if set(last.sources_answered) >= expected and {i.source for i in last.items} >= expected:
            return last
        time.sleep(1.0)
    raise TimeoutError(
        f"no feed with items from all of {sorted(expected)} within {timeout_s:.0f}s; "
        f"last: {last.sources_answered if last else 'none'}"
    )


def wait_until_serving(client: FeedClient, member_id: str, expected: set[str], timeout_s: float = 180) -> None:
    """Until every FPR answers a request: services take a while to start and replay the network."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if set(client.feed(member_id, timeout_s=10).sources_answered) >= expected:
                return
        except FeedTimeout:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"not every FPR of {sorted(expected)} answered within {timeout_s:.0f}s")


def full_feeds(
    client: FeedClient, sup: Supervisor, members: list[str], expected: set[str], wanted: int, tries: int = 30
) -> list[RankedFeed]:
    """Feeds of the first members whose feed mixes every FPR (some members' networks are too small)."""
    wait_until_serving(client, members[0], expected)
    found: list[RankedFeed] = []
    for member_id in members[: max(tries, wanted)]:
        if len(found) == wanted:
            break
        if dead := sup.dead():
            raise RuntimeError(f"services exited: {dead}; see {sup.settings.log_dir}")
        try:
            found.append(wait_for_full_feed(client, member_id, expected, timeout_s=5))
        except TimeoutError:
            continue
    return found


def show(feed: RankedFeed) -> None:
    table = Table(title=f"feed for {feed.member_id}  (request {feed.request_id[:8]}, {feed.model_version})")
    for col in ("pos", "item", "type", "source", "actor", "pCTR", "propensity"):
        table.add_column(col, justify="right" if col in ("pos", "pCTR", "propensity") else "left")
    for it in feed.items:
        table.add_row(
            str(it.position),
            it.item_id,
            it.item_type.value,
            it.source,
            it.actor_id,
            f"{it.score:.3f}",
            f"{it.propensity:.3f}",
        )
    console.print(table)
    mix = Counter(i.source for i in feed.items)
    console.print(f"sources: {dict(mix)}; answered {feed.sources_answered}, missing {feed.sources_missing}")
    console.print(f"explain it: feedrank explain {feed.request_id}\n")


def run_demo(settings: Settings, members: int = 2000, requests: int = 3000, feeds: int = 3) -> list[RankedFeed]:
    generator = SimulatedTraffic(members=members, requests=requests, seed=7)
    prepare(settings, generator)
    expected = {n.removeprefix("fpr-") for n in pipeline_services(settings) if n.startswith("fpr-")}
    with Supervisor(settings) as sup:
        started = sup.start_all()
        console.print(f"[green]services[/] started: {', '.join(started)} (logs in {settings.log_dir})")
        sent = publish_traffic(settings, generator)
        console.print(f"[green]traffic[/] {sent} events sent to member-events")
        client = FeedClient(settings)
        try:
            shown = full_feeds(client, sup, [f"m{i}" for i in range(members)], expected, feeds)
        finally:
            client.close()
        for feed in shown:
            show(feed)
        if not shown:
            raise RuntimeError(f"no feed with all of {sorted(expected)}; see logs in {settings.log_dir}")
        return shown
