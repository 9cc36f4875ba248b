"""The streaming feature service: a Faust app folding ``member-events`` into the feature families.

Rows live in a changelog-backed table (recovered from Kafka on restart). Each row remembers the last
offset it applied per source partition, so events re-read after a crash are not counted twice.
Changed rows go to Feast's Redis online store and to the offline Parquet store in micro-batches, and
only then are their events acknowledged, so committed offsets never run ahead of what was written.
Bad events are dead-lettered with the reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib

import faust
from prometheus_client import Counter, Histogram, start_http_server

from features.families import apply_event, stored_rows
from feedrank.contracts import ContractError, DeadLetter, MemberEvent, Topic, parse, topic_name
from feedrank.settings import get_settings

log = logging.getLogger(__name__)
settings = get_settings()

MICRO_BATCH = 5000  # changed rows
MICRO_BATCH_WITHIN_S = 0.05

app = faust.App(
    f"{settings.topic_prefix}feedrank-features",
    broker=f"kafka://{settings.kafka_bootstrap}",
    store="memory://",
    web_enabled=False,
    datadir=str(settings.state_dir / "faust"),
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
    table_cleanup_interval=60.0,
    broker_commit_every=1000,
    broker_commit_interval=1.0,
)
member_events = app.topic(
    topic_name(Topic.MEMBER_EVENTS, settings.topic_prefix), key_serializer="raw", value_serializer="raw"
)
dead_letters = app.topic(
    topic_name(Topic.DEAD_LETTERS, settings.topic_prefix), key_serializer="raw", value_serializer="raw"
)
# Row key (view|entity...) -> the row's decayed sums, totals, reference time and applied offsets.
rows = app.Table("feature-rows", default=None, partitions=settings.topic_partitions, key_type=str, value_type=dict)


def changelog_partition(key: str) -> int:
    """Every version of a row goes to one changelog partition, so recovery replays its history in order."""
    return zlib.crc32(key.encode()) % settings.topic_partitions


FRESHNESS = Histogram(
    "feedrank_feature_freshness_seconds",
    "Event time to the feature being readable online",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30, 60, 300, float("inf")),
)
EVENTS = Counter("feedrank_feature_events_total", "member-events processed", ["outcome"])
ROWS_WRITTEN = Counter("feedrank_feature_rows_written_total", "feature rows written online and offline")


class Sinks:
    """Online (Feast/Redis) and offline (Parquet) writers, created lazily so importing the app is cheap.

    Offline rows are buffered into larger files (every OFFLINE_EVERY_S or OFFLINE_MAX_ROWS rows).
    """

    def __init__(self) -> None:
        self._online = None
        self._offline = None
        self._buffer: dict[str, list[dict]] = {}
        self._buffered = 0
        self._since = time.monotonic()

    def _open(self) -> None:
        if self._online is None:
            from features.offline import OfflineAppender
            from features.store import OnlineWriter, feature_store
            from services.kafka_io import make_producer

            self._online = OnlineWriter(feature_store(settings), settings)
            self._offline = OfflineAppender(settings.feast_dir / "offline")
            self._changelog = make_producer(settings, **{"linger.ms": 5, "batch.num.messages": 10_000})
            self._changelog_topic = rows.changelog_topic.get_topic_name()

    def write_changelog(self, changed: dict[str, dict]) -> None:
        """The table's changelog, in the format Faust writes and recovers (JSON key and value).

        Produced with librdkafka rather than Faust's per-message producer buffer, which sends one
        message per await and caps the service at a few thousand row updates a second.
        """
        produce, name = self._changelog.produce, self._changelog_topic
        for key, row in changed.items():
            produce(
                name,
                json.dumps(row, separators=(",", ":")).encode(),
                key=json.dumps(key).encode(),
                partition=changelog_partition(key),
            )
        if self._changelog.flush(30) > 0:
            raise RuntimeError("changelog writes not acknowledged by Kafka within 30 s")

    def write_online(self, changed: dict[str, dict], watermark: float) -> int:
        """Changelog first (so the table survives a crash), then Redis; returns rows written."""
        self._open()
        self.write_changelog(changed)
        rows_by_view = stored_rows(changed.keys(), changed)
        written = self._online.write(rows_by_view, watermark)
        for view, batch in rows_by_view.items():
            self._buffer.setdefault(view, []).extend(batch)
            self._buffered += len(batch)
        return written

    @property
    def buffered(self) -> int:
        return self._buffered

    def offline_due(self) -> bool:
        return self._buffered >= OFFLINE_MAX_ROWS or (
            self._buffered > 0 and time.monotonic() - self._since >= OFFLINE_EVERY_S
        )

    def write_offline(self) -> int:
        self._open()
        buffer, n = self._buffer, self._buffered
        self._buffer, self._buffered, self._since = {}, 0, time.monotonic()
        self._offline.append(buffer)
        return n

    def warm(self) -> None:
        """Load Feast and its registry before consuming, so the first micro-batch is not seconds late."""
        self._open()


sink = Sinks()
OFFLINE_EVERY_S = 2.0
OFFLINE_MAX_ROWS = 200_000


class WriteBehind:
    """Rows changed and events read since the last flush.

    The agent folds events into this overlay instead of the table, so a row changed by many events
    in a micro-batch costs one changelog message, not one per event. A flush moves the rows into the
    table and its changelog, then to Redis; events are acknowledged only once their rows are also in
    the offline store, so committed offsets never run ahead of what was written. Rows are stamped
    with the event-time watermark (the newest event time seen), which never goes backwards.
    """

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}
        self.events: list[faust.types.EventT] = []
        self.event_times: list[float] = []
        self.unacked: list[faust.types.EventT] = []  # written online, waiting for the offline write
        self.watermark = 0.0
        self.since = time.monotonic()

    def get(self, key: str, default=None):
        row = self.rows.get(key)
        return row if row is not None else rows.data.get(key, default)

    def __setitem__(self, key: str, row: dict) -> None:
        self.rows[key] = row

    def add(self, ev: faust.types.EventT, event_time: float | None) -> None:
        if not self.events:
            self.since = time.monotonic()
        self.events.append(ev)
        if event_time is not None:
            self.event_times.append(event_time)
            self.watermark = max(self.watermark, event_time)

    def due(self) -> bool:
        return len(self.rows) >= MICRO_BATCH or (
            bool(self.events) and time.monotonic() - self.since >= MICRO_BATCH_WITHIN_S
        )

    def take(self):
        out = self.rows, self.events, self.event_times, self.watermark
        self.rows, self.events, self.event_times = {}, [], []
        return out


pending = WriteBehind()
_flush_lock = asyncio.Lock()


async def flush(force_offline: bool = False) -> int:
    """Changelog, then Redis, then (when due) Parquet and acks; one flush at a time, in order."""
    async with _flush_lock:
        changed, events, event_times, watermark = pending.take()
        written = 0
        loop = asyncio.get_running_loop()
        if changed:
            for key, row in changed.items():
                rows.data[key] = row
            written = await loop.run_in_executor(None, sink.write_online, changed, watermark)
            ROWS_WRITTEN.inc(written)
            done = time.time()
            for t in event_times:
                FRESHNESS.observe(max(0.0, done - t))
        pending.unacked.extend(events)
        if pending.unacked and (force_offline or sink.offline_due() or not sink.buffered):
            if sink.buffered:
                await loop.run_in_executor(None, sink.write_offline)
            for ev in pending.unacked:
                ev.ack()
            pending.unacked = []
        return written


def _dead_letter(ev: faust.types.EventT, reason: str) -> DeadLetter:
    raw = ev.value if isinstance(ev.value, bytes) else str(ev.value).encode()
    msg = ev.message
    return DeadLetter.of("features", msg.topic, raw, reason, partition=msg.partition, offset=msg.offset, key=msg.key)


@app.agent(member_events)
async def aggregate(stream: faust.StreamT) -> None:
    async for ev in stream.noack().events():
        try:
            event = parse(MemberEvent, ev.value)
        except ContractError as err:
            letter = _dead_letter(ev, str(err))
            await dead_letters.send(key=(letter.key or "").encode(), value=letter.to_bytes())
            EVENTS.labels("dead_letter").inc()
            pending.add(ev, None)
            yield 0
            continue
        changed = apply_event(event, pending, source=(ev.message.partition, ev.message.offset))
        pending.add(ev, event.timestamp if changed else None)
        EVENTS.labels("applied" if changed else "no_change").inc()
        if len(pending.rows) >= MICRO_BATCH:
            await flush()
        yield len(changed)


@app.timer(interval=MICRO_BATCH_WITHIN_S)
async def flush_on_time() -> None:
    if pending.due() or (pending.unacked and (sink.offline_due() or not sink.buffered)):
        await flush()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s features %(levelname)s %(message)s")
    from services.kafka_io import ensure_topics

    ensure_topics(settings)
    if settings.features_metrics_port:
        try:
            start_http_server(settings.features_metrics_port, addr="127.0.0.1")
        except OSError as err:  # another service holds the port: features still flow, metrics do not
            log.warning("metrics port %d unavailable (%s); metrics off", settings.features_metrics_port, err)
    sink.warm()
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
