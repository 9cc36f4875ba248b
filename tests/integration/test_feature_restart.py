"""Killing the feature service mid-stream (kill -9) and restarting it loses nothing and counts nothing
twice: table rows come back from the changelog, and re-read events are skipped row by row."""

from __future__ import annotations

import signal
import threading
import time

from features.families import recompute
from feedrank.contracts import Topic
from services.kafka_io import LagProbe, drop_topics
from services.supervisor import Supervisor
from services.traffic import SimulatedTraffic
from services.traffic_service import MemberEventPublisher

from .conftest import isolated_settings, wait_online_equals


def test_kill_9_and_restart_equals_uninterrupted(base_settings, tmp_path):
    s = isolated_settings(base_settings, tmp_path, features_metrics_port=0)
    traffic = SimulatedTraffic(members=500, requests=900, seed=9)
    events = list(traffic.events())
    half = len(events) // 2
    sup = Supervisor(s)
    try:
        sup.start("features")
        # A first chunk, until the service has committed it (it is up); then the rest of the first half
        # at a steady 1,000 events/s, and the service is killed at its next commit, while events are
        # still arriving: some acknowledged, some written online but not acknowledged, some not read.
        chunk = 1000
        publisher = MemberEventPublisher(s)
        publisher.publish(events[:chunk])
        publisher.flush()
        deadline = time.monotonic() + 120
        with LagProbe(s, s.features_app_id, Topic.MEMBER_EVENTS) as probe:
            while probe.committed() < chunk:
                assert time.monotonic() < deadline, "the feature service never committed its first events"
                time.sleep(0.05)
            slow = MemberEventPublisher(s, rate=1000)
            sender = threading.Thread(target=lambda: (slow.publish(events[chunk:half]), slow.flush()))
            sender.start()
            while probe.committed() <= chunk:
                assert time.monotonic() < deadline, "the feature service stopped committing"
                time.sleep(0.05)
        mid_stream = sender.is_alive()
        sup.kill("features", signal.SIGKILL)
        sender.join()
        assert mid_stream, "the whole first half was sent before the first commit: not mid-stream"
        publisher.publish(events[half:])
        publisher.flush()
        sup.start("features")
        assert wait_online_equals(s, recompute(events), timeout_s=120) == []
        assert sup.dead() == {}
    finally:
        sup.stop_all()
        drop_topics(s)
