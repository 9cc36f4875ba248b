"""What every long-running service shares: logging, graceful stop on SIGTERM/SIGINT, partition lookup."""

from __future__ import annotations

import logging
import signal
import threading

from confluent_kafka import Consumer, TopicPartition

log = logging.getLogger(__name__)


def setup_logging(service: str, level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")


def stop_event() -> threading.Event:
    """Set on SIGTERM or SIGINT, so loops finish their batch, flush and commit before exiting."""
    stop = threading.Event()

    def _handler(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping after the current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop


def assign_from_beginning(consumer: Consumer, topic: str, timeout_s: float = 10.0) -> int:
    """Read a whole topic outside any group (a private, rebuildable view); returns the partition count."""
    md = consumer.list_topics(topic, timeout=timeout_s)
    partitions = md.topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, -2) for p in partitions])  # -2: OFFSET_BEGINNING
    return len(partitions)
