"""The batching consumer's bookkeeping, without a broker: batches split by partition, and acknowledging
a batch moves the offset Faust would commit exactly as acknowledging each record would."""

import faust
from faust.types import TP

from features.batching import BatchingConsumer, RecordBatch


def _consumer(topic: str) -> BatchingConsumer:
    app = faust.App("test-batching", broker="kafka://127.0.0.1:1", broker_consumer="kafka-batching://127.0.0.1:1")
    app.topic(topic)  # acks are on for topics the conductor knows
    app.topics._acking_topics.add(topic)
    consumer = app.consumer
    assert isinstance(consumer, BatchingConsumer)  # the entry point resolves the transport
    return consumer


def test_batch_of_values_has_consecutive_offsets_in_one_partition():
    b = RecordBatch.of("t", [b"a", b"b", None], partition=2, first_offset=7)
    assert len(b) == 3 and b.partitions == [2, 2, 2] and b.offsets == [7, 8, 9] and b.values[2] is None


def test_by_partition_splits_runs():
    b = RecordBatch("t", [0, 0, 1, 1, 1, 0], [5, 6, 1, 2, 3, 7], [None] * 6, [b""] * 6)
    assert list(b.by_partition()) == [(0, [5, 6]), (1, [1, 2, 3]), (0, [7])]


def test_acking_a_batch_moves_the_commit_offset_past_it():
    consumer = _consumer("t")
    tp0, tp1 = TP("t", 0), TP("t", 1)
    consumer._committed_offset[tp0], consumer._committed_offset[tp1] = 10, 5  # as after a commit
    first = RecordBatch("t", [0, 0, 1], [10, 11, 5], [None] * 3, [b""] * 3, consumer)
    second = RecordBatch("t", [0, 0], [12, 13], [None] * 2, [b""] * 2, consumer)
    second.ack()  # acknowledged first: nothing committable past the unacknowledged 10 and 11
    assert consumer._new_offset(tp0) is None
    first.ack()
    first.ack()  # twice is once
    assert consumer._n_acked == 5
    assert consumer._new_offset(tp0) == 14 and consumer._new_offset(tp1) == 6


def test_unregistered_batches_are_not_acknowledged():
    consumer = _consumer("t")
    RecordBatch("other", [0], [0], [None], [b""], consumer).ack()
    assert consumer._new_offset(TP("other", 0)) is None
