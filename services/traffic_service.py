"""Publishes a traffic generator's events to ``member-events``, keyed by member, with progress."""

from __future__ import annotations

import time

from rich.progress import Progress

from feedrank.contracts import Topic
from feedrank.settings import Settings
from services.kafka_io import ensure_topics, make_producer, topic
from services.traffic import SimulatedTraffic


def publish_traffic(
    settings: Settings, generator: SimulatedTraffic, rate: float | None = None, show_progress: bool = True
) -> int:
    """Send every event; ``rate`` caps events per second (None: as fast as the broker takes them)."""
    ensure_topics(settings)
    producer = make_producer(settings)
    out = topic(settings, Topic.MEMBER_EVENTS)
    start = time.monotonic()
    sent = 0
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("member-events", total=None)
        for event in generator.events():
            producer.produce(out, event.to_bytes(), key=event.member_id)
            sent += 1
            if sent % 1000 == 0:
                producer.poll(0)
                progress.update(task, completed=sent)
            if rate is not None:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
    producer.flush(30)
    return sent
