"""Killing the feature service mid-stream (kill -9) and restarting it loses nothing and counts nothing
twice: table rows come back from the changelog, and re-read events are skipped row by row."""

from __future__ import annotations

import itertools
import signal
import time

from features.families import recompute
from feedrank.contracts import Topic
from services.kafka_io import LagProbe
from services.supervisor import Supervisor
from services.traffic import SimulatedTraffic
from services.traffic_service import MemberEventPublisher

from .conftest import drop_topics, isolated_settings, wait_online_equals


def test_kill_9_and_restart_equals_uninterrupted(base_settings, tmp_path):
    s = isolated_settings(base_settings, tmp_path, features_metrics_port=0)
    traffic = SimulatedTraffic(members=500, requests=900, seed=9)
    events = list(traffic.events())
    half = len(events) // 2
    publisher = MemberEventPublisher(s)
    sup = Supervisor(s)
    try:
        sup.start("features")
        publisher.publish(itertools.islice(events, half))
        publisher.flush()
        # Kill it mid-stream: once it has committed part of the first half, with the rest in flight.
        deadline = time.monotonic() + 120
        with LagProbe(s, f"{s.topic_prefix}feedrank-features", Topic.MEMBER_EVENTS) as probe:
            while (lag := probe.lag()) > 0.8 * half:
                assert time.monotonic() < deadline, "the feature service never started consuming"
                time.sleep(0.05)
        sup.kill("features", signal.SIGKILL)
        assert lag > 0, "the whole first half was processed before the kill: not mid-stream"
        publisher.publish(events[half:])
        publisher.flush()
        sup.start("features")
        assert wait_online_equals(s, recompute(events), timeout_s=120) == []
        assert sup.dead() == {}
    finally:
        sup.stop_all()
        drop_topics(s)
