"""The Feast feature store, configured from feedrank's settings, and its online write and read paths."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from feast import FeatureStore, RepoConfig

from feature_repo.definitions import ENTITIES, FEATURE_VIEWS
from features.families import VIEWS
from features.redis_layout import FeastRedisLayout, SharedRows
from feedrank.infra import check_redis_credentials
from feedrank.redis_keys import unlink_matching
from feedrank.settings import Settings

# Every stored feature, as Feast references ("view:feature").
SERVING_FEATURES: list[str] = [f"{v.name}:{c}" for v in VIEWS for c in v.stored]


def feature_store(settings: Settings) -> FeatureStore:
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(
        project=settings.feast_project,
        provider="local",
        registry=str(settings.feast_dir / "registry.db"),
        # The feature service is the only writer of its rows and writes them in order, each a running
        # total: last write wins, and Feast's read-before-write timestamp check would only drop updates.
        online_store={
            "type": "redis",
            "connection_string": settings.feast_redis_connection_string(),
            "skip_dedup": True,
            "full_scan_for_deletion": False,
        },
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=settings.feast_repo,
    )
    return FeatureStore(config=config)


def apply_definitions(settings: Settings) -> FeatureStore:
    """``feast apply`` for this repository's definitions (idempotent).

    Checks Redis's credentials first (Feast's apply does not talk to Redis): a wrong or missing
    FEEDRANK_REDIS_PASSWORD fails here, clearly, not at the first feature read or write."""
    check_redis_credentials(settings)
    store = feature_store(settings)
    store.apply([*ENTITIES, *FEATURE_VIEWS])
    return store


def drop_online_rows(settings: Settings, project_glob: str) -> int:
    """Delete the online rows of the Feast projects matching ``project_glob`` (Feast's Redis keys end
    with the project name), so that test and benchmark runs do not grow Redis without bound."""
    return unlink_matching(settings.redis_client(), f"*{project_glob}")


class OnlineWriter:
    """Writes feature rows to the online store in Feast's layout, one Redis pipeline per micro-batch."""

    def __init__(self, store: FeatureStore, settings: Settings) -> None:
        self._layout = FeastRedisLayout(store, settings.redis_client())

    def write(self, rows_by_view: dict[str, list[dict]], event_time: float | None = None) -> int:
        return self._layout.write(rows_by_view, event_time if event_time is not None else time.time())


class FastOnlineReader:
    """The serving read: Feast's layout read directly in one pipelined round trip (``view__feature``)."""

    def __init__(self, store: FeatureStore, settings: Settings, fail_fast: bool = False) -> None:
        self._layout = FeastRedisLayout(store, settings.redis_client(fail_fast))
        ttl_s = settings.shared_rows_ttl_ms / 1000.0
        self.shared = SharedRows(ttl_s) if ttl_s > 0 else None

    def read(self, member_id: str, candidates: Sequence[tuple[str, str, str]]) -> pd.DataFrame:
        return self._layout.read(member_id, candidates)

    def read_columns(self, member_id: str, candidates: Sequence[tuple[str, str, str]]) -> dict[str, np.ndarray]:
        """Only the columns serving uses (each view's ``served``), as arrays: what the mixer scores."""
        return self._layout.read_columns(member_id, candidates, served_only=True, shared=self.shared)


def entity_rows(member_id: str, candidates: Sequence[tuple[str, str, str]]) -> list[dict[str, str]]:
    """(item_id, item_type, actor_id) candidates to Feast entity rows carrying every join key."""
    return [{"member_id": member_id, "item_id": i, "item_type": t, "actor_id": a} for i, t, a in candidates]


class OnlineReader:
    """Feast's SDK read of every stored feature for one member and many candidates (``view__feature``)."""

    def __init__(self, store: FeatureStore, features: Sequence[str] = SERVING_FEATURES) -> None:
        self._store = store
        self._features = list(features)

    def read(self, member_id: str, candidates: Sequence[tuple[str, str, str]]) -> pd.DataFrame:
        """One row per candidate, in order."""
        if not candidates:
            return pd.DataFrame(columns=[f.replace(":", "__") for f in self._features])
        resp = self._store.get_online_features(
            features=self._features, entity_rows=entity_rows(member_id, candidates), full_feature_names=True
        )
        return pd.DataFrame(resp.to_dict())
