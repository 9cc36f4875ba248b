"""The mixer's offset ledger: a partition's stored offset never passes a message still being gathered."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import TopicPartition

from services.kafka_io import OffsetLedger


@dataclass
class Msg:
    t: str
    p: int
    o: int

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o


def offsets(tps: list[TopicPartition]) -> dict[tuple[str, int], int]:
    return {(tp.topic, tp.partition): tp.offset for tp in tps}


def test_stored_offset_stops_at_the_oldest_unfinished_message():
    ledger = OffsetLedger()
    keys = [ledger.read(Msg("req", 0, o)) for o in range(10, 15)]
    assert ledger.safe() == []  # nothing finished: nothing to store
    ledger.finish([keys[0], keys[2], keys[3]])  # 11 still being gathered
    assert offsets(ledger.safe()) == {("req", 0): 11}
    assert ledger.safe() == []  # unchanged since: not stored again
    ledger.finish([keys[1]])
    assert offsets(ledger.safe()) == {("req", 0): 14}
    ledger.finish([keys[4]])
    assert offsets(ledger.safe()) == {("req", 0): 15}  # all done: one past the last read
    assert ledger.open_messages() == 0


def test_partitions_and_topics_are_independent():
    ledger = OffsetLedger()
    a = ledger.read(Msg("req", 0, 5))
    b = ledger.read(Msg("cand", 0, 7))
    c = ledger.read(Msg("req", 1, 3))
    ledger.finish([b, c])
    assert offsets(ledger.safe()) == {("cand", 0): 8, ("req", 1): 4}
    ledger.finish([a])
    assert offsets(ledger.safe()) == {("req", 0): 6}


def test_a_revoked_partition_is_forgotten_and_late_finishes_are_ignored():
    ledger = OffsetLedger()
    a = ledger.read(Msg("req", 0, 5))
    ledger.read(Msg("req", 0, 6))
    ledger.forget([TopicPartition("req", 0)])
    ledger.finish([a])  # a feed delivered after the partition went to another worker
    assert ledger.safe() == [] and ledger.open_messages() == 0
    # Assigned back later: read again from the committed offset, tracked afresh.
    again = ledger.read(Msg("req", 0, 5))
    ledger.finish([again])
    assert offsets(ledger.safe()) == {("req", 0): 6}
