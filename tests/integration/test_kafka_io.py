"""The request path's consumer helpers against the real broker: ``consume_ready`` takes what has
arrived without waiting for more, and a ``STORED_OFFSETS`` consumer commits only what was stored."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import TopicPartition

from feedrank.contracts import Topic
from services.kafka_io import (
    STORED_OFFSETS,
    consume_ready,
    drop_topics,
    ensure_topics,
    make_consumer,
    make_producer,
    store_processed,
    topic,
)

from .conftest import isolated_settings


def _until(consumer, wanted: int, timeout_s: float = 30.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < wanted and time.monotonic() < deadline:
        got += [m for m in consume_ready(consumer, wanted - len(got), 1.0) if m.error() is None]
    return got


def test_consume_ready_and_stored_offsets_commit_only_what_was_processed(base_settings, tmp_path):
    s = isolated_settings(base_settings, tmp_path, topic_partitions=1)
    ensure_topics(s, [Topic.FEED_REQUESTS])
    name = topic(s, Topic.FEED_REQUESTS)
    group = f"kafka-io-{uuid.uuid4().hex[:6]}"
    try:
        producer = make_producer(s)
        for i in range(5):
            producer.produce(name, f"m{i}".encode(), key=b"k")
        assert producer.flush(10) == 0
        consumer = make_consumer(s, group, **STORED_OFFSETS)
        consumer.subscribe([name])
        first = _until(consumer, 3)
        assert [m.value() for m in first] == [b"m0", b"m1", b"m2"]  # never more than asked for
        store_processed(consumer, first[:2])  # m2 read but not processed
        consumer.close()  # commits the stored offsets

        again = make_consumer(s, group, **STORED_OFFSETS)
        committed = again.committed([TopicPartition(name, 0)], timeout=10)[0].offset
        assert committed == first[1].offset() + 1
        again.subscribe([name])
        rest = _until(again, 3)
        assert [m.value() for m in rest] == [b"m2", b"m3", b"m4"]  # m2 again: at least once
        assert consume_ready(again, 10, 0.2) == []  # nothing left: an empty batch after the timeout
        again.close()
    finally:
        drop_topics(s)
