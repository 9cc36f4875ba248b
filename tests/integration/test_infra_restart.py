"""Redis and the Kafka broker restarted under running services: the feature service rides out both by
itself (no restart of the service), loses no event and counts none twice; every feed request is
answered, without online features (and saying so) while Redis is down; and after Redis loses the
rows outright, ``feedrank rebuild-online`` writes them all back from Kafka."""

from __future__ import annotations

import threading
import time

from features.families import recompute
from features.store import drop_online_rows
from feedrank import infra
from feedrank.contracts import Topic
from services.kafka_io import LagProbe, drop_topics
from services.supervisor import Supervisor
from services.traffic import SimulatedTraffic
from services.traffic_service import MemberEventPublisher

from .conftest import (
    feedrank_cli,
    isolated_settings,
    online_mismatches,
    serving,
    steady_requests,
    wait_all,
    wait_online_equals,
)


def _send(s, events, rate: float) -> threading.Thread:
    def run() -> None:
        publisher = MemberEventPublisher(s, rate=rate)
        publisher.publish(events)
        publisher.flush(180)

    sender = threading.Thread(target=run)
    sender.start()
    return sender


def _until_committed(s, n: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    with LagProbe(s, s.features_app_id, Topic.MEMBER_EVENTS) as probe:
        while probe.committed() < n:
            assert time.monotonic() < deadline, "the feature service is not committing"
            time.sleep(0.1)


def test_redis_and_broker_restarts_lose_nothing_and_the_online_store_rebuilds_from_kafka(base_settings, tmp_path):
    s = isolated_settings(base_settings, tmp_path, features_metrics_port=0)
    events = list(SimulatedTraffic(members=400, requests=700, seed=13).events())
    third = len(events) // 3
    sup = Supervisor(s)
    try:
        sup.start("features")
        first = events[: third // 4]
        _send(s, first, rate=None).join()
        _until_committed(s, len(first))

        # Redis stops (SIGTERM: it syncs its append-only file) and comes back while events stream in.
        sender = _send(s, events[len(first) : 2 * third], rate=1500)
        time.sleep(1.5)
        assert infra.redis_down(s)
        time.sleep(2.0)
        infra.redis_up(s)
        assert sender.is_alive(), "all events were sent before Redis came back: not mid-stream"
        sender.join()
        assert wait_online_equals(s, recompute(events[: 2 * third]), timeout_s=120) == [], sup.dead()
        assert sup.dead() == {}

        # The broker stops and comes back while events stream in: producers and the service reconnect.
        sender = _send(s, events[2 * third :], rate=1500)
        time.sleep(1.5)
        assert infra.kafka_down(s)
        time.sleep(1.0)
        infra.kafka_up(s)
        sender.join()
        assert wait_online_equals(s, recompute(events), timeout_s=180) == [], sup.dead()
        assert sup.dead() == {}

        # Redis loses every row of the namespace; the changelog in Kafka brings them all back.
        assert drop_online_rows(s, s.feast_project) > 1000
        assert online_mismatches(s, recompute(events))
        out = feedrank_cli(s, "rebuild-online", timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "feature rows" in out.stdout
        assert online_mismatches(s, recompute(events)) == []
    finally:
        sup.stop_all()
        drop_topics(s)


def test_every_feed_request_is_answered_through_redis_and_broker_restarts(base_settings, generator, tmp_path):
    with serving(base_settings, tmp_path, generator) as (s, sup, client, _):
        sender, sent = steady_requests(client, 320)  # 16 s
        time.sleep(2.0)
        assert infra.redis_down(s)
        redis_down = time.monotonic()
        time.sleep(2.0)
        infra.redis_up(s)
        redis_up = time.monotonic()
        time.sleep(4.0)
        assert infra.kafka_down(s)
        infra.kafka_up(s)
        sender.join()
        feeds = wait_all(client, sup, [rid for rid, _ in sent], timeout_s=120)
        assert len(feeds) == len(sent) == 320  # every request answered, through both restarts
        assert sup.dead() == {}
        at = dict(sent)
        while_down = [f for rid, f in feeds.items() if redis_down + 0.2 < at[rid] < redis_up - 0.2]
        assert while_down and all(f.degraded for f in while_down)  # served without Redis, and said so
        assert all(f.items for f in while_down)
        after = [f for rid, f in feeds.items() if redis_up + 2.0 < at[rid] < redis_up + 3.5]
        assert after and not any(f.degraded for f in after)  # back on Redis by itself
