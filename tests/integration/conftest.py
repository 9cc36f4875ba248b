"""Integration fixtures: the real local Kafka broker and Redis (started if needed), and per-session
isolation by topic prefix and Feast project, so tests never see the demo's data or each other's."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest

from features.families import VIEW_BY_NAME, VIEWS, stored_row
from features.store import apply_definitions, drop_online_rows, feature_store
from feedrank import infra
from feedrank.contracts import RankedFeed, Topic
from feedrank.settings import Settings
from services.demo import full_feeds, train_missing_fprs, wait_until_serving
from services.feed_client import FeedClient, FeedTimeout
from services.feed_state import drop_feed_state
from services.kafka_io import drop_topics, ensure_topics, topic
from services.supervisor import Supervisor, pipeline_services
from services.traffic import SimulatedTraffic
from services.traffic_service import publish_traffic
from services.train_spr import train_spr


def feedrank_cli(settings: Settings, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``feedrank ARGS`` as a child process with exactly these settings; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "feedrank.cli", *args],
        capture_output=True,
        text=True,
        env=settings.child_env(),
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def base_settings() -> Iterator[Settings]:
    s = Settings()
    statuses = infra.up(s)
    assert all(c.reachable for c in statuses), [c.line() for c in statuses]
    yield s
    drop_test_feature_rows(s)


def drop_test_feature_rows(s: Settings) -> None:
    drop_online_rows(s, "test_*")
    drop_feed_state(s, "test_*")


def isolated_settings(base: Settings, tmp_path, **overrides) -> Settings:
    run = uuid.uuid4().hex[:8]
    s = Settings(
        **{
            **base.model_dump(),
            "topic_prefix": f"test-{run}-",
            "feast_project": f"test_{run}",
            "models_path": tmp_path / "models",
            "logs_path": tmp_path / "logs",
            "impressions_path": tmp_path / "impressions",
            **overrides,
        }
    )
    ensure_topics(s)
    apply_definitions(s)
    return s


@pytest.fixture(scope="session")
def generator() -> SimulatedTraffic:
    return SimulatedTraffic(members=400, requests=400, seed=5)


@contextmanager
def running_services(
    base: Settings, tmp_path, generator: SimulatedTraffic, **overrides: object
) -> Iterator[tuple[Settings, Supervisor]]:
    """Every service as its own process on a fresh topic namespace, with FPR models and a mixer trained on
    the generator's traffic; torn down after."""
    s = isolated_settings(base, tmp_path, **overrides)
    train_missing_fprs(s, generator)
    train_spr(s, generator.events(), generator.describe())
    sup = Supervisor(s)
    sup.start_all()
    try:
        yield s, sup
    finally:
        sup.stop_all()
        drop_topics(s)


@contextmanager
def serving(
    base: Settings, tmp_path, generator: SimulatedTraffic
) -> Iterator[tuple[Settings, Supervisor, FeedClient, set[str]]]:
    """``running_services`` with the generator's traffic sent and every FPR answering: the settings, the
    supervisor, a feed client and the FPRs' names."""
    with running_services(base, tmp_path, generator) as (s, sup):
        publish_traffic(s, generator, show_progress=False)
        client = FeedClient(s)
        try:
            expected = {n.removeprefix("fpr-") for n in pipeline_services(s) if n.startswith("fpr-")}
            wait_until_serving(client, "m1", expected)
            yield s, sup, client, expected
        finally:
            client.close()


def wait_all(client: FeedClient, sup: Supervisor, request_ids: list[str], timeout_s: float) -> dict[str, RankedFeed]:
    """Each request's feed, waiting up to ``timeout_s`` for each; a missing one fails with the tail of
    every service's log, which says what the pipeline was doing (a failure in CI leaves nothing else)."""
    feeds: dict[str, RankedFeed] = {}
    for rid in request_ids:
        try:
            feeds[rid] = client.wait(rid, timeout_s=timeout_s)
        except FeedTimeout as err:
            tails = "\n".join(f"--- {name}\n{_service_log(sup, name)}" for name in sorted(sup.procs))
            raise AssertionError(f"{err} ({len(feeds)} of {len(request_ids)} answered before it)\n{tails}") from err
    return feeds


def _service_log(sup: Supervisor, name: str) -> str:
    try:
        return infra.log_tail(sup.log_path(name), lines=40)
    except OSError as err:
        return f"(no log: {err})"


def steady_requests(client: FeedClient, n: int, first_member: int = 20) -> tuple[threading.Thread, list]:
    """A started thread sending ``n`` feed requests, 20 a second whatever is running, for members
    ``m{first_member}`` on (350 of them in turn); and the list of (request_id, time sent) it fills."""
    sent: list[tuple[str, float]] = []

    def send() -> None:
        for i in range(n):
            sent.append((client.request(f"m{first_member + i % 350}").request_id, time.monotonic()))
            time.sleep(0.05)

    sender = threading.Thread(target=send)
    sender.start()
    return sender, sent


@pytest.fixture(scope="module")
def pipeline(base_settings, generator, tmp_path_factory):
    """The services, with two mixer workers, the generator's traffic sent, and one feed that mixes every FPR."""
    with running_services(base_settings, tmp_path_factory.mktemp("pipeline"), generator, mixer_workers=2) as (
        s,
        sup,
    ):
        publish_traffic(s, generator, show_progress=False)
        client = FeedClient(s)
        expected = {n.removeprefix("fpr-") for n in pipeline_services(s) if n.startswith("fpr-")}
        try:
            found = full_feeds(client, sup, [f"m{i}" for i in range(generator.members)], expected, 1)
            assert found, f"no member got a feed from every FPR; logs in {s.log_dir}"
            yield {"settings": s, "supervisor": sup, "client": client, "expected": expected, "first_feed": found[0]}
        finally:
            client.close()


def dead_letter_topic(s: Settings) -> str:
    return topic(s, Topic.DEAD_LETTERS)


def online_mismatches(s: Settings, expected: dict[str, dict]) -> list[tuple]:
    """Rows of ``expected`` (a batch recomputation) whose online values differ, for every family."""
    store = feature_store(s)
    by_view: dict[str, list[dict]] = {}
    for key in expected:
        view, row = stored_row(key, expected[key])
        by_view.setdefault(view, []).append(row)
    assert set(by_view) == {v.name for v in VIEWS} and sum(map(len, by_view.values())) > 1000
    mismatches: list[tuple] = []
    for view, rows in by_view.items():
        keys, cols = VIEW_BY_NAME[view].join_keys, VIEW_BY_NAME[view].stored
        got = pd.DataFrame(
            store.get_online_features(
                features=[f"{view}:{c}" for c in cols], entity_rows=[{k: r[k] for k in keys} for r in rows]
            ).to_dict()
        )
        want = pd.DataFrame(rows)
        for c in cols:
            bad = ~np.isclose(pd.to_numeric(got[c]).fillna(-1).to_numpy(), want[c].to_numpy(), rtol=1e-9)
            mismatches += [
                (view, c, want.loc[i, list(keys)].tolist(), want.loc[i, c], got.loc[i, c])
                for i in np.flatnonzero(bad)[:3]
            ]
    return mismatches


def wait_online_equals(s: Settings, expected: dict[str, dict], timeout_s: float = 90) -> list[tuple]:
    """Poll until the online store equals ``expected``; the remaining mismatches (empty when equal)."""
    deadline = time.monotonic() + timeout_s
    while (bad := online_mismatches(s, expected)) and time.monotonic() < deadline:
        time.sleep(1)
    return bad[:5]
