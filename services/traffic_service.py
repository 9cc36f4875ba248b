"""Publishes member events to ``member-events``, keyed by member, with progress."""

from __future__ import annotations

import time
from collections.abc import Iterable

import pyarrow as pa
from rich.progress import Progress

from feedrank.contracts import MemberEvent, Topic
from feedrank.settings import Settings
from services.kafka_io import ensure_topics, make_producer, topic
from services.traffic import SimulatedTraffic
from simulator.session import events_to_member_events


class MemberEventPublisher:
    """Validated events to Kafka; ``rate`` caps events per second (None: as fast as the broker takes them)."""

    def __init__(self, settings: Settings, rate: float | None = None) -> None:
        ensure_topics(settings)
        self._producer = make_producer(settings)
        self._topic = topic(settings, Topic.MEMBER_EVENTS)
        self._rate = rate
        self._start = time.monotonic()
        self.sent = 0

    def publish(self, events: Iterable[MemberEvent]) -> int:
        n0 = self.sent
        for event in events:
            self._producer.produce(self._topic, event.to_bytes(), key=event.member_id)
            self.sent += 1
            if self.sent % 1000 == 0:
                self._producer.poll(0)
            if self._rate is not None:
                ahead = self.sent / self._rate - (time.monotonic() - self._start)
                if ahead > 0:
                    time.sleep(ahead)
        return self.sent - n0

    def publish_table(self, table: pa.Table) -> int:
        """A simulator events table (see ``simulator.session.EVENT_SCHEMA``)."""
        return self.publish(events_to_member_events(table))

    def flush(self, timeout_s: float = 60.0) -> None:
        self._producer.flush(timeout_s)


def publish_traffic(
    settings: Settings, generator: SimulatedTraffic, rate: float | None = None, show_progress: bool = True
) -> int:
    publisher = MemberEventPublisher(settings, rate)
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("member-events", total=None)
        for event in generator.events():
            publisher.publish((event,))
            if publisher.sent % 1000 == 0:
                progress.update(task, completed=publisher.sent)
    publisher.flush()
    return publisher.sent
