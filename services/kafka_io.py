"""confluent-kafka clients configured from settings, topic provisioning and dead-lettering."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from feedrank.contracts import DeadLetter, Topic, topic_name
from feedrank.settings import Settings

log = logging.getLogger(__name__)

DEAD_LETTER_PAYLOAD_LIMIT = 256 * 1024


def topic(settings: Settings, t: Topic) -> str:
    return topic_name(t, settings.topic_prefix)


def make_producer(settings: Settings, **overrides: str | int) -> Producer:
    cfg: dict[str, str | int] = {
        **settings.kafka_client_config(),
        "linger.ms": 2,
        "enable.idempotence": True,
        "message.max.bytes": settings.max_message_bytes + 64 * 1024,
    }
    cfg.update(overrides)
    return Producer(cfg)


def make_consumer(settings: Settings, group_id: str, **overrides: str | int | bool) -> Consumer:
    """At-least-once consumer: offsets are committed by the caller after its output is produced."""
    cfg: dict[str, str | int | bool] = {
        **settings.kafka_client_config(),
        "group.id": f"{settings.topic_prefix}{group_id}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "fetch.wait.max.ms": 10,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "partition.assignment.strategy": "range",
    }
    cfg.update(overrides)
    return Consumer(cfg)


def ensure_topics(settings: Settings, topics: Iterable[Topic] = tuple(Topic), timeout_s: float = 30.0) -> list[str]:
    """Create the project's topics if missing (idempotent); returns their deployed names."""
    admin = AdminClient(settings.kafka_client_config())
    names = [topic(settings, t) for t in topics]
    deadline = time.monotonic() + timeout_s
    while True:
        existing = set(admin.list_topics(timeout=10).topics)
        missing = [n for n in names if n not in existing]
        if not missing:
            return names
        futures = admin.create_topics(
            [NewTopic(n, num_partitions=settings.topic_partitions, replication_factor=1) for n in missing]
        )
        for name, fut in futures.items():
            try:
                fut.result()
            except KafkaException as err:
                if "TOPIC_ALREADY_EXISTS" not in str(err):
                    if time.monotonic() > deadline:
                        raise
                    log.warning("creating topic %s failed (%s); retrying", name, err)
                    time.sleep(0.5)


class DeadLetterSink:
    """Publishes rejected messages, whole (up to a bound) and with the reason, to ``dead-letters``."""

    def __init__(self, settings: Settings, producer: Producer, service: str) -> None:
        self._producer = producer
        self._topic = topic(settings, Topic.DEAD_LETTERS)
        self._service = service

    def send(self, msg: Message | None, reason: str, *, source_topic: str = "", payload: bytes | None = None) -> None:
        raw = payload if payload is not None else (msg.value() if msg is not None else b"") or b""
        text = raw.decode("utf-8", errors="backslashreplace")
        key = msg.key() if msg is not None else None
        letter = DeadLetter(
            service=self._service,
            source_topic=msg.topic() if msg is not None else source_topic,
            partition=msg.partition() if msg is not None else None,
            offset=msg.offset() if msg is not None else None,
            key=key.decode("utf-8", errors="backslashreplace") if isinstance(key, bytes) else key,
            payload=text[:DEAD_LETTER_PAYLOAD_LIMIT],
            payload_truncated=len(text) > DEAD_LETTER_PAYLOAD_LIMIT,
            reason=reason[:2000],
        )
        log.warning("dead-letter from %s: %s", letter.source_topic, letter.reason)
        self._producer.produce(self._topic, letter.to_bytes(), key=letter.key)
