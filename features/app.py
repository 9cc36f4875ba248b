"""The streaming feature service: a Faust app folding ``member-events`` into the feature families.

The agent takes micro-batches of events (``take_events``) and folds each batch into the rows of every
view at once (:class:`features.row_state.RowState`, numpy). A flush then writes the changed rows to the
table's changelog (Kafka, so a restarted worker recovers them), to Feast's Redis online store, and,
every few seconds, to the offline Parquet store; events are acknowledged only after all three, so
committed offsets never run ahead of what was written. Each row remembers the last offset it applied
per source partition, so events re-read after a crash are not counted twice. Bad events are
dead-lettered with the reason.

One worker owns every row: rows are keyed by entity, not by the member-keyed source partition.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import faust
import numpy as np
import pyarrow as pa
from prometheus_client import Counter, Histogram, start_http_server

from features.families import SEP, VIEWS, View
from features.row_state import Changed, RowState, event_kind
from feedrank.contracts import ContractError, DeadLetter, MemberEvent, Topic, parse, topic_name
from feedrank.settings import get_settings

log = logging.getLogger(__name__)
settings = get_settings()

MICRO_BATCH_EVENTS = 5000
MICRO_BATCH_WITHIN_S = 0.05
OFFLINE_EVERY_S = 2.0
OFFLINE_MAX_ROWS = 200_000

# How the worker reads member-events (shared with benchmarks/bench_faust_floor.py, which measures Faust's
# own ceiling with exactly these settings).
CONSUMER_SETTINGS: dict[str, object] = {
    "consumer_auto_offset_reset": "earliest",
    "consumer_max_fetch_size": 8 * 1024 * 1024,
    "stream_buffer_maxsize": 32_768,
}

app = faust.App(
    f"{settings.topic_prefix}feedrank-features",
    broker=f"kafka://{settings.kafka_bootstrap}",
    store="memory://",
    web_enabled=False,
    datadir=str(settings.state_dir / "faust"),
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=1,
    **CONSUMER_SETTINGS,
    table_cleanup_interval=60.0,
    broker_commit_every=10_000,
    broker_commit_interval=1.0,
)
member_events = app.topic(
    topic_name(Topic.MEMBER_EVENTS, settings.topic_prefix), key_serializer="raw", value_serializer="raw"
)
dead_letters = app.topic(
    topic_name(Topic.DEAD_LETTERS, settings.topic_prefix), key_serializer="raw", value_serializer="raw"
)
# Row key (view|entity...) -> the row's packed record (see RowState.pack). Faust recovers it from the
# changelog on start; the service reads it only for rows it has not folded since (RowState's loader).
rows = app.Table(
    "feature-rows-v2",
    default=None,
    partitions=settings.topic_partitions,
    key_type=str,  # serialized as JSON
    value_type=bytes,  # Faust serializes bytes raw
    recovery_buffer_size=10_000,
)
state = RowState(settings.topic_partitions, load=lambda key: rows.data.get(key))


FRESHNESS = Histogram(
    "feedrank_feature_freshness_seconds",
    "Event time to the feature being readable online",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30, 60, 300, float("inf")),
)
EVENTS = Counter("feedrank_feature_events_total", "member-events processed", ["outcome"])
ROWS_WRITTEN = Counter("feedrank_feature_rows_written_total", "feature rows written online and offline")


class Sinks:
    """The changelog, online (Feast's Redis layout) and offline (Parquet) writers, opened lazily.

    Offline rows are buffered into larger files (every OFFLINE_EVERY_S or OFFLINE_MAX_ROWS rows).
    """

    def __init__(self) -> None:
        self._layout = None
        self._offline = None
        self._changelog = None
        self._buffer: dict[str, list[pa.Table]] = {}
        self._buffered = 0
        self._since = time.monotonic()
        # Row key -> (entity values, Redis key): computed once per row, not once per write (the only
        # cache of them here: the layout's own key cache is bypassed).
        self._addresses: dict[str, tuple[tuple[str, ...], bytes]] = {}

    def _open(self) -> None:
        if self._layout is None:
            from features.offline import OfflineAppender
            from features.redis_layout import FeastRedisLayout
            from features.store import feature_store, redis_client
            from services.kafka_io import make_producer

            self._layout = FeastRedisLayout(feature_store(settings), redis_client(settings))
            self._offline = OfflineAppender(settings.feast_dir / "offline")
            self._changelog = make_producer(settings, **{"linger.ms": 5, "batch.num.messages": 10_000})
            self._changelog_topic = rows.changelog_topic.get_topic_name()

    def _address(self, view: View, key: str) -> tuple[tuple[str, ...], bytes]:
        got = self._addresses.get(key)
        if got is None:
            entities = tuple(key.split(SEP)[1:])
            got = (entities, self._layout.uncached_key(view, entities))
            if len(self._addresses) >= _ADDRESS_CACHE_MAX:
                self._addresses.clear()
            self._addresses[key] = got
        return got

    def produce_changelog(self, changed: Changed) -> None:
        """One message per changed row, keyed as Faust keys the table (a JSON string), so it recovers it.

        Produced with librdkafka rather than Faust's per-message producer buffer, which sends one
        message per await and caps the service at a few thousand row updates a second. Delivery is
        awaited only before the events are acknowledged (``changelog_durable``): a crash before that
        re-reads the events, and folds them again into the rows as the changelog last had them.
        """
        produce, name, parts = self._changelog.produce, self._changelog_topic, settings.topic_partitions
        raw = changed.records.tobytes()
        w = changed.records.shape[1] * 8
        for i, key in enumerate(changed.keys):
            k = key.encode()
            produce(name, raw[i * w : (i + 1) * w], key=b'"%s"' % k, partition=zlib.crc32(k) % parts)
        self._changelog.poll(0)

    def changelog_durable(self) -> None:
        if self._changelog is not None and self._changelog.flush(30) > 0:
            raise RuntimeError("changelog writes not acknowledged by Kafka within 30 s")

    def write_online(self, changed: Changed, watermark: float) -> int:
        """The changelog (in flight), then Redis; returns rows written."""
        self._open()
        self.produce_changelog(changed)
        batches = {}
        for view in VIEWS:
            keys, values = changed.stored(view)
            if not keys:
                continue
            addresses = [self._address(view, k) for k in keys]
            batches[view.name] = ([a[1] for a in addresses], values)
            columns = {name: pa.array([a[0][j] for a in addresses]) for j, name in enumerate(view.join_keys)}
            columns.update({c: values[:, j] for j, c in enumerate(view.stored)})
            self._buffer.setdefault(view.name, []).append(pa.table(columns))
            self._buffered += len(keys)
        return self._layout.write_keyed(batches, watermark)

    @property
    def buffered(self) -> int:
        return self._buffered

    def offline_due(self) -> bool:
        return self._buffered >= OFFLINE_MAX_ROWS or (
            self._buffered > 0 and time.monotonic() - self._since >= OFFLINE_EVERY_S
        )

    def take_offline(self) -> dict[str, pa.Table]:
        """The buffered rows, one table per view, to be written by ``write_offline``; the buffer restarts."""
        buffer = self._buffer
        self._buffer, self._buffered, self._since = {}, 0, time.monotonic()
        return {view: pa.concat_tables(tables) for view, tables in buffer.items()}

    def write_offline(self, tables: dict[str, pa.Table]) -> int:
        self._open()
        return self._offline.append(tables)

    def warm(self) -> None:
        """Load Feast and its registry before consuming, so the first micro-batch is not seconds late."""
        self._open()


_ADDRESS_CACHE_MAX = 2_000_000


sink = Sinks()


@dataclass
class Pending:
    """Events folded but not yet acknowledged: written online, waiting for the offline write.

    Rows are stamped with the event-time watermark (the newest event time seen), which never goes back.
    """

    unacked: list[faust.types.EventT] = field(default_factory=list)
    watermark: float = 0.0
    offline_tasks: set[asyncio.Task] = field(default_factory=set)


pending = Pending()
_flush_lock = asyncio.Lock()
# Parquet files are written by one thread of their own, in order, so a slow file never holds up the
# online writes behind it; the events a file covers are acknowledged when it is on disk.
_offline_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offline")


async def _write_offline_then_ack(tables: dict[str, pa.Table], events: list[faust.types.EventT]) -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(_offline_pool, sink.changelog_durable)
    if tables:
        await loop.run_in_executor(_offline_pool, sink.write_offline, tables)
    for ev in events:
        ev.ack()


def _offline_done(task: asyncio.Task) -> None:
    """A failed changelog or Parquet write must not pass silently: its events are unacknowledged, so the
    worker exits and, restarted, re-reads them (the crash path the kill -9 test exercises)."""
    pending.offline_tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.critical("offline or changelog write failed: %r; exiting to replay from offsets", task.exception())
        os._exit(70)


async def flush(
    changed: Changed | None = None,
    events: list[faust.types.EventT] | None = None,
    event_times: np.ndarray | None = None,
    force_offline: bool = False,
) -> int:
    """Changelog and Redis, then (when due, in the background) Parquet and acks; flushes run in order."""
    async with _flush_lock:
        written = 0
        if changed is not None and len(changed):
            # Inline, not in a thread: the service is bound by the GIL, and handing each micro-batch to
            # a thread measured ~10% slower than writing it from the event loop (Redis answers in ~ms).
            written = sink.write_online(changed, pending.watermark)
            ROWS_WRITTEN.inc(written)
            if event_times is not None and len(event_times):
                done = time.time()
                for lag in np.maximum(0.0, done - event_times).tolist():
                    FRESHNESS.observe(lag)
        if events:
            pending.unacked.extend(events)
        if pending.unacked and (force_offline or sink.offline_due() or not sink.buffered):
            task = asyncio.ensure_future(_write_offline_then_ack(sink.take_offline(), pending.unacked))
            pending.unacked = []
            pending.offline_tasks.add(task)
            task.add_done_callback(_offline_done)
        if force_offline:
            await asyncio.gather(*pending.offline_tasks)
        return written


def _dead_letter(ev: faust.types.EventT, reason: str) -> DeadLetter:
    raw = ev.value if isinstance(ev.value, bytes) else str(ev.value).encode()
    msg = ev.message
    return DeadLetter.of("features", msg.topic, raw, reason, partition=msg.partition, offset=msg.offset, key=msg.key)


@app.agent(member_events)
async def aggregate(stream: faust.StreamT) -> None:
    async for events in stream.noack().take_events(MICRO_BATCH_EVENTS, within=MICRO_BATCH_WITHIN_S):
        batch: list[tuple[MemberEvent, int, int]] = []
        for ev in events:
            try:
                batch.append((parse(MemberEvent, ev.value), ev.message.partition, ev.message.offset))
            except ContractError as err:
                letter = _dead_letter(ev, str(err))
                await dead_letters.send(key=(letter.key or "").encode(), value=letter.to_bytes())
                EVENTS.labels("dead_letter").inc()
        changed = state.fold(batch)
        # Freshness is measured for the events that update feature rows (not posts, connects...).
        times = np.fromiter((e.timestamp for e, _, _ in batch if event_kind(e) >= 0), dtype=np.float64)
        if len(times):
            pending.watermark = max(pending.watermark, float(times.max()))
        EVENTS.labels("applied").inc(len(times))
        EVENTS.labels("no_change").inc(len(batch) - len(times))
        await flush(changed, list(events), times if changed is not None else None)
        yield len(changed) if changed is not None else 0


@app.timer(interval=MICRO_BATCH_WITHIN_S)
async def flush_on_time() -> None:
    if pending.unacked and (sink.offline_due() or not sink.buffered):
        await flush()


def main() -> None:
    import mode.loop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s features %(levelname)s %(message)s")
    from services.kafka_io import ensure_topics

    mode.loop.use("uvloop")  # Faust's per-message machinery is the ceiling here; uvloop lifts it by ~30%
    ensure_topics(settings)
    if settings.features_metrics_port:
        try:
            start_http_server(settings.features_metrics_port, addr="127.0.0.1")
        except OSError as err:  # another service holds the port: features still flow, metrics do not
            log.warning("metrics port %d unavailable (%s); metrics off", settings.features_metrics_port, err)
    sink.warm()
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
