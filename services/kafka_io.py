"""confluent-kafka clients configured from settings, topic provisioning and dead-lettering."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from feedrank.contracts import DeadLetter, Topic, topic_name
from feedrank.settings import Settings

log = logging.getLogger(__name__)


def topic(settings: Settings, t: Topic) -> str:
    return topic_name(t, settings.topic_prefix)


# Producers on a feed's critical path (the request, the FPRs' answers, the feed) send at once: a
# linger batches messages a little at the price of that much latency per hop.
REQUEST_PATH: dict[str, str | int] = {"linger.ms": 0}


def make_producer(settings: Settings, **overrides: str | int) -> Producer:
    """Keyed messages are partitioned with murmur2, the Java client's default: a request and its FPR
    candidates (both keyed by request_id) land on the same partition number whichever client wrote them,
    which is what lets the mixer scale out by worker."""
    cfg: dict[str, str | int] = {
        **settings.kafka_client_config(),
        "partitioner": "murmur2_random",
        "linger.ms": 2,
        "enable.idempotence": True,
        "message.max.bytes": settings.max_message_bytes + 64 * 1024,
    }
    cfg.update(overrides)
    return Producer(cfg)


def make_consumer(settings: Settings, group_id: str, **overrides: str | int | bool) -> Consumer:
    """At-least-once consumer: offsets are committed by the caller after its output is produced.

    Fetches long-poll: the broker answers as soon as one byte is there (``fetch.min.bytes`` 1), so a
    longer ``fetch.wait.max.ms`` adds no latency, while a short one makes every idle consumer ask the
    broker again and again (at 10 ms, a dozen idle consumers kept the broker busy at 60% of a core)."""
    cfg: dict[str, str | int | bool] = {
        **settings.kafka_client_config(),
        "group.id": f"{settings.topic_prefix}{group_id}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "fetch.min.bytes": 1,
        "fetch.wait.max.ms": 200,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "partition.assignment.strategy": "range",
    }
    cfg.update(overrides)
    return Consumer(cfg)


# Request-path consumers (FPRs, mixer) store offsets and let librdkafka commit the stored offsets once a
# second and on close: at least once, since nothing is stored before Kafka has its output (an FPR
# flushes its answers first; the mixer's OffsetLedger stores a request once its feed is acknowledged),
# without an OffsetCommit request to the broker for every request and FPR.
STORED_OFFSETS: dict[str, str | int | bool] = {
    "enable.auto.commit": True,
    "enable.auto.offset.store": False,
    "auto.commit.interval.ms": 1000,
}


def store_processed(consumer: Consumer, msgs: list[Message]) -> None:
    """Mark ``msgs`` processed (a ``STORED_OFFSETS`` consumer): the next auto-commit covers them."""
    last: dict[tuple[str, int], int] = {}
    for m in msgs:
        if m.error() is None:
            key = (m.topic(), m.partition())
            last[key] = max(last.get(key, -1), m.offset())
    if not last:
        return
    try:
        consumer.store_offsets(offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()])
    except KafkaException as err:  # a partition revoked meanwhile: its new owner reads it again
        log.info("offsets not stored (%s)", err)


MessageKey = tuple[str, int, int]  # (topic, partition, offset)


class OffsetLedger:
    """What a ``STORED_OFFSETS`` consumer may commit when its messages finish out of order.

    The mixer holds a request and its FPR answers until the feed is published; storing each batch's
    last offset as it is read (``store_processed``) would commit requests still being gathered, and a
    crash would lose them. The ledger stores, per partition, the offset of the oldest message not yet
    finished, so a restarted worker re-reads every request whose feed was not published (at least once).
    """

    def __init__(self) -> None:
        self._read: dict[tuple[str, int], deque[int]] = {}
        self._finished: dict[tuple[str, int], set[int]] = {}
        self._stored: dict[tuple[str, int], int] = {}

    def read(self, msg: Message) -> MessageKey:
        key = (msg.topic(), msg.partition(), msg.offset())
        self._read.setdefault(key[:2], deque()).append(key[2])
        return key

    def finish(self, keys: Iterable[MessageKey]) -> None:
        for t, p, o in keys:
            if (t, p) in self._read:  # else forgotten since (revoked): its new owner reads it again
                self._finished.setdefault((t, p), set()).add(o)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Revoked partitions: their new owner reads from the last stored offset."""
        for tp in partitions:
            for d in (self._read, self._finished, self._stored):
                d.pop((tp.topic, tp.partition), None)

    def open_messages(self) -> int:
        return sum(len(q) for q in self._read.values())

    def safe(self) -> list[TopicPartition]:
        """Per partition whose safe offset moved: the oldest unfinished offset, or one past the last read."""
        out = []
        for tp, queue in self._read.items():
            done, last = self._finished.get(tp, set()), None
            while queue and queue[0] in done:
                last = queue.popleft()
                done.discard(last)
            if last is None:
                continue
            offset = queue[0] if queue else last + 1
            if self._stored.get(tp) != offset:
                self._stored[tp] = offset
                out.append(TopicPartition(tp[0], tp[1], offset))
        return out

    def store(self, consumer: Consumer) -> None:
        offsets = self.safe()
        if offsets:
            try:
                consumer.store_offsets(offsets=offsets)
            except KafkaException as err:  # a partition revoked meanwhile: its new owner reads it again
                log.info("offsets not stored (%s)", err)


def consume_ready(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Up to ``max_messages``: waits at most ``timeout`` seconds for the first, then takes only what has
    already arrived. confluent-kafka's ``consume(n, timeout)`` waits out the whole timeout unless ``n``
    messages arrive, so at a low request rate every hop waited its full timeout (a 5 requests/s feed took
    80 ms at p50 on an idle machine)."""
    msgs = consumer.consume(num_messages=max_messages, timeout=0)
    if msgs or timeout <= 0:
        return msgs
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(num_messages=max_messages - 1, timeout=0)] if max_messages > 1 else [first]


# Per-topic overrides of the broker defaults. member-events is the system of record that every FPR
# replays to rebuild its inventory, so it is kept forever.
TOPIC_CONFIG: dict[Topic, dict[str, str]] = {
    Topic.MEMBER_EVENTS: {"retention.ms": "-1"},
    Topic.DEAD_LETTERS: {"retention.ms": str(30 * 86_400_000)},
}


def ensure_topics(settings: Settings, topics: Iterable[Topic] = tuple(Topic), timeout_s: float = 30.0) -> list[str]:
    """Create the project's topics if missing (idempotent); returns their deployed names."""
    admin = AdminClient(settings.kafka_client_config())
    wanted = {topic(settings, t): t for t in topics}
    names = list(wanted)
    deadline = time.monotonic() + timeout_s
    while True:
        existing = set(admin.list_topics(timeout=10).topics)
        missing = [n for n in names if n not in existing]
        if not missing:
            return names
        futures = admin.create_topics(
            [
                NewTopic(
                    n,
                    num_partitions=settings.topic_partitions,
                    replication_factor=1,
                    config=TOPIC_CONFIG.get(wanted[n], {}),
                )
                for n in missing
            ]
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

    def send(
        self,
        msg: Message | None,
        reason: str,
        *,
        source_topic: str = "",
        payload: bytes | None = None,
        at: MessageKey | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        """``msg`` rejected, whole; or ``payload`` (a message already parsed), from ``at`` if known."""
        if msg is not None:
            letter = DeadLetter.of(
                self._service,
                msg.topic(),
                payload if payload is not None else msg.value(),
                reason,
                partition=msg.partition(),
                offset=msg.offset(),
                key=msg.key(),
            )
        else:
            partition, offset = (at[1], at[2]) if at else (None, None)
            letter = DeadLetter.of(self._service, source_topic, payload, reason, partition=partition, offset=offset)
        log.warning("dead-letter from %s: %s", letter.source_topic, letter.reason)
        self._producer.produce(self._topic, letter.to_bytes(), key=letter.key, on_delivery=on_delivery)


# Errors a freshly started broker or a just-created topic returns for a few moments.
_TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError._TIMED_OUT,
}


class LagProbe:
    """How far a consumer group is behind on a topic, with one reused librdkafka consumer.

    The consumer carries the probed group's id but never subscribes, so it never joins the group: it only
    fetches the group's committed offsets (``committed``) and the partitions' high watermarks. (The admin
    API's ``list_consumer_group_offsets`` was avoided on purpose: it segfaulted the interpreter while the
    group coordinator was still loading on a fresh broker, cf. confluent-kafka-python #1982.)
    """

    def __init__(self, settings: Settings, group: str, t: Topic) -> None:
        from confluent_kafka import TopicPartition

        self.group = group
        self.topic = topic(settings, t)
        self._consumer = Consumer(
            {
                **settings.kafka_client_config(),
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
            }
        )
        parts = self._consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
        self._tps = [TopicPartition(self.topic, p) for p in parts]

    def lag(self, timeout_s: float = 10.0) -> int:
        """Messages not yet committed by the group, summed over partitions."""
        committed, high = self.positions(timeout_s)
        return high - committed

    def committed(self, timeout_s: float = 10.0) -> int:
        """Messages the group has committed, summed over partitions."""
        return self.positions(timeout_s)[0]

    def positions(self, timeout_s: float = 10.0) -> tuple[int, int]:
        """(committed, high watermark), each summed over partitions; retries the broker's transient errors
        (a new topic's leader not yet elected) for ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                committed = {tp.partition: tp.offset for tp in self._consumer.committed(self._tps, timeout=10)}
                done = high = 0
                for tp in self._tps:
                    _, h = self._consumer.get_watermark_offsets(tp, timeout=10)
                    high += h
                    done += min(max(committed.get(tp.partition, 0), 0), h)
                return done, high
            except KafkaException as err:
                e = err.args[0]
                if time.monotonic() > deadline or not (e.retriable() or e.code() in _TRANSIENT):
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> LagProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def consumer_lag(settings: Settings, group: str, t: Topic) -> int:
    """Messages of topic ``t`` not yet committed by consumer group ``group`` (as deployed, prefix included)."""
    with LagProbe(settings, group, t) as probe:
        return probe.lag()


def drop_topics(settings: Settings) -> None:
    """Delete every topic of the settings' namespace (``topic_prefix``), Faust's changelogs included."""
    if not settings.topic_prefix:
        raise ValueError("refusing to delete topics without a topic_prefix namespace")
    admin = AdminClient(settings.kafka_client_config())
    names = [n for n in admin.list_topics(timeout=10).topics if n.startswith(settings.topic_prefix)]
    if names:
        for fut in admin.delete_topics(names).values():
            fut.exception()
