"""A private inventory folded from ``member-events``: replayed from the beginning, then followed.

Every FPR service and every mixer worker keeps its own (outside any consumer group), so each is
rebuildable from the topic and no team shares state with another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from confluent_kafka import TopicPartition

from feedrank.contracts import ContractError, MemberEvent, Topic, parse
from feedrank.settings import Settings
from rankers.inventory import Inventory
from services.kafka_io import consume_ready, make_consumer, topic
from services.runtime import assign_from_beginning

EventHook = Callable[[MemberEvent], None]


class InventoryFollower:
    """Folds ``member-events`` into ``inventory``; ``on_event`` (optional) sees every valid event too.

    Invalid events are skipped and counted here; the topic's owner (the features service) dead-letters them.
    """

    def __init__(
        self, settings: Settings, group: str, inventory: Inventory | None = None, on_event: EventHook | None = None
    ) -> None:
        self.settings = settings
        self.group = group
        self.inventory = inventory if inventory is not None else Inventory()
        self.on_event = on_event
        self.skipped = 0
        self._consumer = None

    def _fold(self, max_messages: int, timeout: float) -> int:
        assert self._consumer is not None
        msgs = consume_ready(self._consumer, max_messages, timeout)
        for m in msgs:
            if m.error():
                continue
            try:
                e = parse(MemberEvent, m.value())
            except ContractError:
                self.skipped += 1
                continue
            self.inventory.apply(e)
            if self.on_event is not None:
                self.on_event(e)
        return len(msgs)

    def start(self, stop: threading.Event) -> int:
        """Fold the topic up to the end offsets it had at start: the whole network before serving.

        An empty fetch does not mean the end (a broker that has just started answers empty while it
        loads), so the replay stops on the consumer's positions, not on a quiet poll. Returns the
        number of messages replayed."""
        name = topic(self.settings, Topic.MEMBER_EVENTS)
        self._consumer = make_consumer(self.settings, self.group)
        assign_from_beginning(self._consumer, name)
        partitions = [TopicPartition(name, p.partition) for p in self._consumer.assignment()]
        ends = {tp.partition: self._consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in partitions}
        replayed = 0
        while not stop.is_set():
            replayed += self._fold(5000, timeout=0.2)
            positions = {tp.partition: tp.offset for tp in self._consumer.position(partitions)}
            if all(positions.get(p, -1) >= end or end <= 0 for p, end in ends.items()):
                break
        return replayed

    def poll(self, max_messages: int = 5000) -> int:
        """One bounded batch without waiting, so the caller's requests never starve."""
        return self._fold(max_messages, timeout=0)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
