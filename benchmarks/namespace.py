"""A benchmark run's own namespace on the shared Kafka and Redis, and its removal afterwards."""

from __future__ import annotations

import uuid
from typing import Any

from features.store import drop_online_rows
from feedrank.settings import Settings
from services.feed_state import drop_feed_state
from services.kafka_io import drop_topics


def run_settings(base: Settings, **overrides: Any) -> Settings:
    """``base`` with topics and a Feast project of a run's own (``bench-ID-`` / ``bench_ID``), so runs
    never see each other's or the demo's data."""
    run = uuid.uuid4().hex[:8]
    return Settings(
        **{**base.model_dump(), "topic_prefix": f"bench-{run}-", "feast_project": f"bench_{run}", **overrides}
    )


def drop_run(settings: Settings) -> None:
    """The run's feature rows, served histories, explanations and topics go, so repeated runs start
    from the same Redis and Kafka (a Redis grown by earlier runs spends seconds rewriting its
    append-only file, on the cores the services use)."""
    drop_online_rows(settings, settings.feast_project)
    drop_feed_state(settings, settings.feast_project)
    drop_topics(settings)
