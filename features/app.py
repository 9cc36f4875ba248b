"""The streaming feature service: a Faust app folding ``member-events`` into feature counters.

Counters live in a changelog-backed table (recovered from Kafka on restart); every micro-batch of
changed rows is pushed to Feast's Redis online store. Bad events are dead-lettered with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import time

import faust

from features.aggregates import apply_event, feature_rows
from feedrank.contracts import ContractError, DeadLetter, MemberEvent, Topic, parse, topic_name
from feedrank.settings import get_settings

log = logging.getLogger(__name__)
settings = get_settings()

MICRO_BATCH = 500
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
)
member_events = app.topic(
    topic_name(Topic.MEMBER_EVENTS, settings.topic_prefix), key_serializer="raw", value_serializer="raw"
)
dead_letters = app.topic(
    topic_name(Topic.DEAD_LETTERS, settings.topic_prefix), key_serializer="raw", value_serializer="raw"
)
# Row key (view|entity...) -> [impressions, engagements].
counts = app.Table("feature-counts", default=None, partitions=settings.topic_partitions, key_type=str, value_type=list)


class OnlineSink:
    """Where changed rows go; the Feast writer is created lazily so importing the app stays cheap."""

    def __init__(self) -> None:
        self._writer = None

    def write(self, rows_by_view: dict[str, list[dict]], event_time: float) -> int:
        if self._writer is None:
            from features.store import OnlineWriter, feature_store

            self._writer = OnlineWriter(feature_store(settings))
        return self._writer.write(rows_by_view, event_time)

    def warm(self) -> None:
        """Load Feast and its registry before consuming, so the first micro-batch is not seconds late."""
        self.write({}, time.time())


sink = OnlineSink()
stats = {"events": 0, "dead_letters": 0, "rows_written": 0, "last_freshness_s": 0.0}


def _dead_letter(ev: faust.types.EventT, reason: str) -> DeadLetter:
    raw = ev.value if isinstance(ev.value, bytes) else str(ev.value).encode()
    msg = ev.message
    return DeadLetter.of("features", msg.topic, raw, reason, partition=msg.partition, offset=msg.offset, key=msg.key)


class PendingRows:
    """Row keys changed since the last flush; flushed by size in the agent and by time in a timer.

    Faust tables only accept writes while an event is current, so the agent iterates event by event
    and the micro-batching happens here, on the way to the online store. Rows are stamped with the
    event-time watermark (the newest event time seen), which never goes backwards.
    """

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.watermark = 0.0
        self.batch_newest = 0.0
        self.since = time.monotonic()

    def add(self, keys: list[str], event_time: float) -> None:
        if not self.keys:
            self.since = time.monotonic()
        self.keys.update(keys)
        self.watermark = max(self.watermark, event_time)
        self.batch_newest = max(self.batch_newest, event_time)

    def due(self) -> bool:
        return len(self.keys) >= MICRO_BATCH or (
            bool(self.keys) and time.monotonic() - self.since >= MICRO_BATCH_WITHIN_S
        )

    def take(self) -> tuple[list[str], float, float]:
        keys, newest = sorted(self.keys), self.batch_newest
        self.keys, self.batch_newest = set(), 0.0
        return keys, self.watermark, newest


pending = PendingRows()
_flush_lock = asyncio.Lock()


async def flush() -> int:
    """Write the pending rows; one flush at a time, so the store sees the totals in order."""
    async with _flush_lock:
        keys, watermark, newest = pending.take()
        if not keys:
            return 0
        rows = feature_rows(keys, counts)  # values as of now: a later flush can only carry newer ones
        written = await asyncio.get_running_loop().run_in_executor(None, sink.write, rows, watermark)
        stats["rows_written"] += written
        stats["last_freshness_s"] = time.time() - newest
        return written


@app.agent(member_events)
async def aggregate(stream: faust.StreamT) -> None:
    async for ev in stream.events():
        try:
            event = parse(MemberEvent, ev.value)
        except ContractError as err:
            letter = _dead_letter(ev, str(err))
            await dead_letters.send(key=(letter.key or "").encode(), value=letter.to_bytes())
            stats["dead_letters"] += 1
            yield 0
            continue
        changed = apply_event(event, counts)
        pending.add(changed, event.timestamp)
        stats["events"] += 1
        if len(pending.keys) >= MICRO_BATCH:
            await flush()
        yield len(changed)


@app.timer(interval=MICRO_BATCH_WITHIN_S)
async def flush_on_time() -> None:
    if pending.due():
        await flush()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s features %(levelname)s %(message)s")
    from services.kafka_io import ensure_topics

    ensure_topics(settings)
    sink.warm()
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
