"""The streaming feature service: a Faust app folding ``member-events`` into the feature families.

Records reach the agent a Kafka fetch at a time (:mod:`features.batching`: Faust's per-record path
alone would cap the worker at about 14k events/s), and each fetch is folded into the rows of every view
at once (:class:`features.row_state.RowState`, numpy). A flush then writes the changed rows to the
table's changelog (Kafka, so a restarted worker recovers them), to Feast's Redis online store, and,
every few seconds, to the offline Parquet store; records are acknowledged only after all three, so
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

from features.batching import RecordBatch, deliver_in_batches
from features.broker_credentials import faust_credentials
from features.dedupe import DuplicateEvents
from features.families import VIEWS
from features.rebuild import ROWS_TABLE
from features.redis_layout import send_while_redis_returns
from features.row_state import Changed, RowState, event_kind
from feedrank.contracts import ContractError, DeadLetter, MemberEvent, Topic, parse, parse_all, topic_name
from feedrank.settings import get_settings

log = logging.getLogger(__name__)
settings = get_settings()

FETCH_MAX_RECORDS = 20_000  # records per fetch, so per fold: larger folds amortise more when behind
FETCHES_AHEAD = 2  # fetches waiting for the agent before the consumer stops fetching
FLUSH_EVERY_S = 0.05
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
    settings.features_app_id,
    broker=f"kafka://{settings.kafka_bootstrap}",
    broker_consumer=f"kafka-batching://{settings.kafka_bootstrap}",
    broker_credentials=faust_credentials(settings),
    broker_max_poll_records=FETCH_MAX_RECORDS,
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
# The agent's input: member-events, one RecordBatch per fetch.
event_batches = app.channel(maxsize=FETCHES_AHEAD)
deliver_in_batches(app, member_events, event_batches)
dead_letters = app.topic(
    topic_name(Topic.DEAD_LETTERS, settings.topic_prefix), key_serializer="raw", value_serializer="raw"
)
# Row key (view|entity...) -> the row's packed record (see RowState.pack). Faust recovers it from the
# changelog on start; the service reads it only for rows it has not folded since (RowState's loader).
rows = app.Table(
    ROWS_TABLE,
    default=None,
    partitions=settings.topic_partitions,
    key_type=str,  # serialized as JSON
    value_type=bytes,  # Faust serializes bytes raw
    recovery_buffer_size=10_000,
)
state = RowState(settings.topic_partitions, load=lambda key: rows.data.get(key))
duplicates = DuplicateEvents(settings.event_dedupe_window)


FRESHNESS = Histogram(
    "feedrank_feature_freshness_seconds",
    "Event time to the feature being readable online",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30, 60, 300, float("inf")),
)
EVENTS = Counter("feedrank_feature_events_total", "member-events processed", ["outcome"])
ROWS_WRITTEN = Counter("feedrank_feature_rows_written_total", "feature rows written online and offline")


class Sinks:
    """The changelog, online (Feast's Redis layout) and offline (Parquet) writers, opened lazily.

    A micro-batch's rows go to the changelog and are encoded as HSETs on the event loop; the Redis
    round trip runs on a thread of its own (``send_online``), so the next micro-batch is parsed and
    folded while Redis applies this one. Offline rows are buffered into larger files (every
    OFFLINE_EVERY_S or OFFLINE_MAX_ROWS rows).
    """

    def __init__(self) -> None:
        self._layout = None
        self._offline = None
        self._changelog = None
        self._buffer: dict[str, list[pa.Table]] = {}
        self._buffered = 0
        self._since = time.monotonic()

    def _open(self) -> None:
        if self._layout is None:
            from features.offline import OfflineAppender
            from features.redis_layout import FeastRedisLayout
            from features.store import feature_store
            from services.kafka_io import make_producer

            self._layout = FeastRedisLayout(feature_store(settings), settings.redis_client())
            self._offline = OfflineAppender(settings.feast_dir / "offline")
            self._changelog = make_producer(
                settings, **{"linger.ms": 5, "batch.num.messages": 10_000, "queue.buffering.max.messages": 1_000_000}
            )
            self._changelog_topic = rows.changelog_topic.get_topic_name()

    def produce_changelog(self, changed: Changed) -> None:
        """One message per changed row, keyed as Faust keys the table (a JSON string), so it recovers it.

        Produced with librdkafka rather than Faust's per-message producer buffer, which sends one
        message per await. Delivery is awaited only before the events are acknowledged
        (``changelog_durable``): a crash before that re-reads the events, and folds them again into the
        rows as the changelog last had them.
        """
        producer, name, parts = self._changelog, self._changelog_topic, settings.topic_partitions
        produce = producer.produce
        raw = changed.records.tobytes()
        w = changed.records.shape[1] * 8
        for i, k in enumerate(map(str.encode, changed.keys)):
            value, key, partition = raw[i * w : (i + 1) * w], b'"%s"' % k, zlib.crc32(k) % parts
            try:
                produce(name, value, key=key, partition=partition)
            except BufferError:  # librdkafka's queue is full: let it drain to the broker, then go on
                while producer.flush(1.0) > 500_000:
                    pass
                produce(name, value, key=key, partition=partition)
        producer.poll(0)

    def changelog_durable(self) -> None:
        if self._changelog is not None and self._changelog.flush(30) > 0:
            raise RuntimeError("changelog writes not acknowledged by Kafka within 30 s")

    def write_online(self, changed: Changed, watermark: float) -> tuple[bytes, int]:
        """Produce the changelog, buffer the offline rows; returns the HSETs for ``send_online``."""
        self._open()
        self.produce_changelog(changed)
        batches = {}
        for view in VIEWS:
            batch = changed.view_batch(view)
            if batch is None:
                continue
            batches[view.name] = columns, values = batch
            table = dict(zip(view.join_keys, columns, strict=True))
            table.update({c: values[:, j] for j, c in enumerate(view.stored)})
            self._buffer.setdefault(view.name, []).append(pa.table(table))
            self._buffered += len(values)
        return self._layout.encode_hsets(batches, watermark)

    def send_online(self, payload: bytes, n: int, event_times: np.ndarray | None) -> int:
        """The Redis round trip (on the online thread); freshness is measured when it returns."""
        send_while_redis_returns(self._layout.client, payload, n)
        ROWS_WRITTEN.inc(n)
        if event_times is not None and len(event_times):
            observe_many(FRESHNESS, np.maximum(0.0, time.time() - event_times))
        return n

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


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """``histogram.observe`` for many values: bucket counts by numpy (one ``observe`` is ~1 us)."""
    bounds = np.asarray(histogram._upper_bounds)
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, c in zip(histogram._buckets, counts.tolist(), strict=False):
        if c:
            bucket.inc(c)
    histogram._sum.inc(float(values.sum()))


ONLINE_IN_FLIGHT = 2  # micro-batches written to Redis at once, at most (their payloads are in memory)


sink = Sinks()


@dataclass
class Pending:
    """Records folded but not yet acknowledged, and the Redis writes they wait for.

    Rows are stamped with the event-time watermark (the newest event time seen), which never goes back.
    """

    unacked: list[RecordBatch] = field(default_factory=list)
    online: list[asyncio.Future] = field(default_factory=list)
    watermark: float = 0.0
    offline_tasks: set[asyncio.Task] = field(default_factory=set)


pending = Pending()
_flush_lock = asyncio.Lock()
# Redis writes run on one thread, in order; Parquet files on another, so a slow file never holds up the
# online writes behind it. The records a file covers are acknowledged when it is on disk and their
# rows are in Redis and the changelog.
_online_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="online")
_offline_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offline")


async def _write_offline_then_ack(
    tables: dict[str, pa.Table], batches: list[RecordBatch], online: list[asyncio.Future]
) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.gather(*online)
    await loop.run_in_executor(_offline_pool, sink.changelog_durable)
    if tables:
        await loop.run_in_executor(_offline_pool, sink.write_offline, tables)
    for batch in batches:
        batch.ack()


def _offline_done(task: asyncio.Task) -> None:
    """A failed Redis, changelog or Parquet write must not pass silently: its records are unacknowledged,
    so the worker exits and, restarted, re-reads them (the crash path the kill -9 test exercises)."""
    pending.offline_tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.critical("a feature write failed: %r; exiting to replay from offsets", task.exception())
        os._exit(70)


async def flush(
    changed: Changed | None = None,
    records: RecordBatch | None = None,
    event_times: np.ndarray | None = None,
    force_offline: bool = False,
) -> int:
    """Changelog and Redis, then (when due, in the background) Parquet and acks; flushes run in order."""
    async with _flush_lock:
        written = 0
        loop = asyncio.get_running_loop()
        if changed is not None and len(changed):
            payload, written = sink.write_online(changed, pending.watermark)
            pending.online.append(loop.run_in_executor(_online_pool, sink.send_online, payload, written, event_times))
            in_flight = [f for f in pending.online if not f.done()]
            if len(in_flight) > ONLINE_IN_FLIGHT:  # Redis is behind: wait rather than queue without bound
                await asyncio.wait(in_flight[: len(in_flight) - ONLINE_IN_FLIGHT])
        if records is not None:
            pending.unacked.append(records)
        if pending.unacked and (force_offline or sink.offline_due() or not sink.buffered):
            task = asyncio.ensure_future(_write_offline_then_ack(sink.take_offline(), pending.unacked, pending.online))
            pending.unacked, pending.online = [], []
            pending.offline_tasks.add(task)
            task.add_done_callback(_offline_done)
        if force_offline:
            await asyncio.gather(*pending.offline_tasks)
        return written


async def dead_letter(records: RecordBatch, i: int, reason: str) -> None:
    letter = DeadLetter.of(
        "features",
        records.topic,
        records.values[i],
        reason,
        partition=records.partitions[i],
        offset=records.offsets[i],
        key=records.keys[i],
    )
    await dead_letters.send(key=(letter.key or "").encode(), value=letter.to_bytes())
    EVENTS.labels("dead_letter").inc()


@app.agent(event_batches)
async def aggregate(stream: faust.StreamT) -> None:
    async for records in stream.noack():
        events = parse_all(MemberEvent, records.values)
        if events is not None:
            batch = list(zip(events, records.partitions, records.offsets, strict=True))
            at = range(len(batch))
        else:  # some record is bad: parse one by one, dead-lettering the bad ones with the reason
            batch, at = [], []
            for i, (raw, part, off) in enumerate(zip(records.values, records.partitions, records.offsets, strict=True)):
                try:
                    batch.append((parse(MemberEvent, raw), part, off))
                    at.append(i)
                except ContractError as err:
                    await dead_letter(records, i, str(err))
        if settings.event_dedupe_window and batch:
            firsts = duplicates.first_offsets((e.event_id, p, o) for e, p, o in batch)
            if any(f is not None for f in firsts):
                kept = []
                for item, i, first in zip(batch, at, firsts, strict=True):
                    if first is None:
                        kept.append(item)
                    else:
                        why = f"duplicate event_id {item[0].event_id}: first at offset {first} of partition {item[1]}"
                        await dead_letter(records, i, why)
                batch = kept
        changed = state.fold(batch)
        # Freshness is measured for the events that update feature rows (not posts, connects...).
        times = np.fromiter((e.timestamp for e, _, _ in batch if event_kind(e) >= 0), dtype=np.float64)
        if len(times):
            pending.watermark = max(pending.watermark, float(times.max()))
        EVENTS.labels("applied").inc(len(times))
        EVENTS.labels("no_change").inc(len(batch) - len(times))
        await flush(changed, records, times if changed is not None else None)
        yield len(changed) if changed is not None else 0


@app.timer(interval=FLUSH_EVERY_S)
async def flush_on_time() -> None:
    if pending.unacked and (sink.offline_due() or not sink.buffered):
        await flush()


def main() -> None:
    import mode.loop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s features %(levelname)s %(message)s")
    from services.kafka_io import ensure_topics
    from services.runtime import freeze_heap

    mode.loop.use("uvloop")  # Faust's per-message machinery is the ceiling here; uvloop lifts it by ~30%
    ensure_topics(settings)
    if settings.features_metrics_port:
        try:
            start_http_server(settings.features_metrics_port, addr="127.0.0.1")
        except OSError as err:  # another service holds the port: features still flow, metrics do not
            log.warning("metrics port %d unavailable (%s); metrics off", settings.features_metrics_port, err)
    sink.warm()
    # What is loaded by now (Faust, Feast, pandas, protobufs...) lives as long as the process: frozen, the
    # cyclic GC stops walking it, and young collections run every 10k allocations instead of 700.
    # Measured at 20k events/s: 5.5 s of a 20 s run in GC before, under 1 s after.
    freeze_heap()
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
