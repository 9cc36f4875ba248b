"""Rebuild the online store from Kafka: after Redis lost data (a restart without its append-only file,
a flush, a new Redis), every feature row is written back as the feature service last recorded it.

The service's row table has a compacted changelog topic holding each row's latest packed record; the
rebuild reads it to its end and writes every row with the same HSETs the service uses, so a rebuilt
store equals the one it replaces. Run it with the feature service stopped or running: rows the service
writes meanwhile are newer or equal, and both writes are whole rows.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
from confluent_kafka import TopicPartition

from features.families import VIEWS
from features.row_state import RowState
from feedrank.settings import Settings

ROWS_TABLE = "feature-rows-v2"  # the feature service's Faust table of rows
WRITE_CHUNK = 50_000  # rows per pipelined write


def changelog_topic(settings: Settings) -> str:
    """Faust names a table's changelog ``{app id}-{table}-changelog``; the app id is the service's."""
    return f"{settings.features_app_id}-{ROWS_TABLE}-changelog"


def read_changelog(settings: Settings, show_progress: bool = False) -> dict[str, bytes]:
    """Every row's latest record (row key -> packed record), read up to the end the topic had at the start."""
    from rich.progress import Progress

    from services.kafka_io import consume_ready, make_consumer

    name = changelog_topic(settings)
    consumer = make_consumer(settings, f"rebuild-online-{uuid.uuid4().hex}")
    try:
        meta = consumer.list_topics(name, timeout=10).topics.get(name)
        if meta is None or meta.error is not None:
            raise RuntimeError(f"no changelog topic {name}: has the feature service ever run in this namespace?")
        ends = {p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10) for p in meta.partitions}
        todo = {p: hi for p, (lo, hi) in ends.items() if hi > lo}
        consumer.assign([TopicPartition(name, p, lo) for p, (lo, _) in ends.items()])
        latest: dict[str, bytes] = {}
        total = sum(hi - lo for lo, hi in ends.values())
        with Progress(disable=not show_progress, transient=True) as progress:
            task = progress.add_task("reading the feature rows' changelog", total=total)
            idle_since = time.monotonic()
            while todo:
                msgs = consume_ready(consumer, 10_000, 1.0)
                if not msgs and time.monotonic() - idle_since > 60:
                    raise RuntimeError(f"changelog {name} stopped short of its end: {todo}")
                for m in msgs:
                    if m.error() is not None:
                        continue
                    idle_since = time.monotonic()
                    key = m.key().decode()
                    key = key[1:-1] if key.startswith('"') else key  # Faust keys the table by JSON string
                    if m.value() is None:
                        latest.pop(key, None)
                    else:
                        latest[key] = m.value()
                    if m.offset() + 1 >= todo.get(m.partition(), 0):
                        todo.pop(m.partition(), None)
                progress.update(task, advance=len(msgs))
        return latest
    finally:
        consumer.close()


# Run just after Redis lost its data, so likely while it restarts or loads: wait that out, briefly.
REBUILD_OUTAGE_S = 60.0


def rebuild_online(settings: Settings, show_progress: bool = False) -> int:
    """Write every row of the changelog to the online store; returns how many rows were written."""
    from features.redis_layout import FeastRedisLayout, send_while_redis_returns
    from features.store import feature_store

    records = read_changelog(settings, show_progress)
    if not records:
        return 0
    changed = RowState(settings.topic_partitions).restore(records)
    assert changed is not None
    layout = FeastRedisLayout(feature_store(settings), settings.redis_client())
    watermark = float(np.max(changed.as_of))  # what the service stamps rows with: the newest event time
    written = 0
    for view in VIEWS:
        batch = changed.view_batch(view)
        if batch is None:
            continue
        columns, values = batch
        for start in range(0, len(values), WRITE_CHUNK):
            end = start + WRITE_CHUNK
            part = {view.name: ([c[start:end] for c in columns], values[start:end])}
            payload, n = layout.encode_hsets(part, watermark)
            send_while_redis_returns(layout.client, payload, n, outage_s=REBUILD_OUTAGE_S)
            written += n
    return written
