"""Faust's Kafka consumer, handing a topic's records to its agent a fetch at a time.

Faust delivers every record to its agent as an event of its own: the consumer awaits each one through
the conductor, a queue and the stream. On the benchmark machine that path alone caps one worker at
about 14k records/s, whatever the agent does with them (``benchmarks/bench_faust_floor.py``). For a
topic registered with :func:`deliver_in_batches`, this consumer hands each fetch from Kafka to an
in-memory channel as one :class:`RecordBatch` instead, and the agent acknowledges the batch when its
results are durable. Everything else stays Faust's: group membership and rebalances, the tables'
changelogs and their recovery (those records still take the per-record path), and offset commits
driven by acknowledgements.

The app selects this consumer with ``broker_consumer="kafka-batching://HOST:PORT"`` (the transport
is registered under the ``faust.transports`` entry point in ``pyproject.toml``).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, AppT, ChannelT, TopicT
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

_ROUTES: weakref.WeakKeyDictionary[AppT, dict[str, ChannelT]] = weakref.WeakKeyDictionary()


@dataclass
class RecordBatch:
    """Records of one topic from one fetch: in offset order within each partition."""

    topic: str
    partitions: list[int]
    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]
    _consumer: BatchingConsumer | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.offsets)

    @classmethod
    def of(cls, topic: str, values: Sequence[bytes | None], partition: int = 0, first_offset: int = 0) -> RecordBatch:
        """A batch not read from Kafka (tests, replays): consecutive offsets in one partition."""
        n = len(values)
        return cls(topic, [partition] * n, list(range(first_offset, first_offset + n)), [None] * n, list(values))

    def by_partition(self) -> Iterator[tuple[int, list[int]]]:
        start = 0
        for i in range(1, len(self.partitions) + 1):
            if i == len(self.partitions) or self.partitions[i] != self.partitions[start]:
                yield self.partitions[start], self.offsets[start:i]
                start = i

    def ack(self) -> None:
        """Mark every record processed, so Faust may commit past it."""
        if self._consumer is not None:
            self._consumer.ack_batch(self)


def deliver_in_batches(app: faust.App, topic: TopicT, channel: ChannelT) -> None:
    """Subscribe the app to ``topic`` and send its fetched records, a batch per fetch, to ``channel``."""
    for name in topic.topics:
        _ROUTES.setdefault(app, {})[name] = channel
    app.topics.add(topic)


# How long the broker may hold a fetch for partitions with no new records. Faust sets 1.5 s, and aiokafka
# sends one fetch per broker at a time: while the registered topic's partitions wait to be handed on,
# the fetch in flight covers only idle ones (Faust's leader topic), and the next fetch for the busy ones
# waits behind it. Measured: batches 1.5 s late at 5k events/s.
FETCH_MAX_WAIT_MS = 50


class _ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: aiokafka_driver.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts its fetcher
        return consumer


class BatchingConsumer(aiokafka_driver.Consumer):
    """The aiokafka consumer with a drain loop that batches the registered topics."""

    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def ack_batch(self, batch: RecordBatch) -> None:
        """``Consumer.ack`` for a whole batch: the offsets join the acknowledged set Faust commits from."""
        if not self.app.topics.acks_enabled_for(batch.topic):
            return
        with ack_lock:
            for partition, offsets in batch.by_partition():
                tp = TP(batch.topic, partition)
                committed = self._committed_offset[tp]
                index = self._acked_index[tp]
                new = [o for o in offsets if (committed is None or o >= committed) and o not in index]
                index.update(new)
                self._acked[tp].extend(new)
                self._n_acked += len(new)
            notify(self._waiting_for_ack)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker; see tests/integration
        routes = _ROUTES.get(self.app, {})
        callback = self.callback
        read_offset = self._read_offset
        to_message = self._to_message
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                records, active = await self._wait_next_records(timeout=1.0)
                await self.sleep(0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:  # a rebalance began: Faust seeks back to the committed offsets
                    await self.perform_seek()
                    continue
                generation = self.app.consumer_generation_id
                fetched: dict[str, list[tuple[TP, list[Any]]]] = {}
                for tp, batch in records.items():
                    if not self.flow_active or self.app.consumer_generation_id != generation:
                        break
                    if active is not None and tp not in active and tp not in self._buffered_partitions:
                        continue
                    last = read_offset[tp]
                    fresh = [r for r in batch if last is None or r.offset >= last]
                    if not fresh:
                        continue
                    if tp.topic in routes:
                        await self._note_gaps(tp, last, fresh)
                        fetched.setdefault(tp.topic, []).append((tp, fresh))
                        continue
                    for record in fresh:  # Faust's own path, record by record (table changelogs)
                        await self.wait_first(callback(to_message(tp, record)), self.suspend_flow.wait())
                        read_offset[tp] = record.offset
                for topic, parts in fetched.items():
                    # One batch per topic per fetch, so the agent folds as much as Kafka had at once.
                    delivered = RecordBatch(topic, [], [], [], [], self)
                    for tp, fresh in parts:
                        delivered.partitions += [tp.partition] * len(fresh)
                        delivered.offsets += [r.offset for r in fresh]
                        delivered.keys += [r.key for r in fresh]
                        delivered.values += [r.value for r in fresh]
                    await routes[topic].send(value=delivered)  # waits while the agent is behind
                    for tp, fresh in parts:
                        read_offset[tp] = fresh[-1].offset
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise

    async def _note_gaps(self, tp: TP, last: int | None, records: Sequence[Any]) -> None:
        """Offsets Kafka skips (compaction, transaction markers) count as acknowledged, as in Faust's loop."""
        if not self.app.topics.acks_enabled_for(tp.topic):
            return
        previous = last
        for r in records:
            if previous is not None and r.offset - previous > 1:
                await self._add_gap(tp, previous + 1, r.offset - 1)  # the skipped offsets only
            previous = r.offset


class Transport(aiokafka_driver.Transport):
    Consumer = BatchingConsumer
