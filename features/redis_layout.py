"""Feast's Redis layout, written and read directly: the fast paths of the feature service and the mixer.

Feast keeps one Redis hash per entity key (``serialize_entity_key(...) + project``) with one field per
feature (``mmh3("view:feature")``) holding a serialized ``Value`` proto, and ``_ts:view`` holding
the row's timestamp. This module builds keys and fields with Feast's own functions, so what it writes
Feast's SDK reads and vice versa (a test checks both ways); it only skips Feast's per-row Python
machinery. Every feedrank feature is a Float64, and a Float64 ``Value`` is always 9 bytes (tag 0x29,
then a little-endian double), so a whole response decodes in one numpy call.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import redis
from feast import FeatureStore
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.infra.online_stores.redis import _versioned_fv_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp

from features.families import VIEWS, View

_DOUBLE_TAG = 0x29
_KEY_CACHE_MAX = 2_000_000


class FeastRedisLayout:
    """Keys and fields of every view, computed once; entity keys cached (hot members and items repeat)."""

    def __init__(self, store: FeatureStore, client: redis.Redis) -> None:
        self.client = client
        self.project = store.project
        self.version = store.config.entity_key_serialization_version
        fvs = {fv.name: fv for fv in store.list_feature_views()}
        self.fields: dict[str, list[bytes]] = {}
        self.ts_field: dict[str, bytes] = {}
        for view in VIEWS:
            name = _versioned_fv_name(fvs[view.name], store.config)
            self.fields[view.name] = [_mmh3(f"{name}:{c}") for c in view.stored]
            self.ts_field[view.name] = f"_ts:{name}".encode()
        self._keys: dict[tuple[str, tuple[str, ...]], bytes] = {}

    def key(self, view: View, entities: tuple[str, ...]) -> bytes:
        k = self._keys.get((view.name, entities))
        if k is None:
            ek = EntityKeyProto(
                join_keys=list(view.join_keys), entity_values=[ValueProto(string_val=v) for v in entities]
            )
            k = _redis_key(self.project, ek, entity_key_serialization_version=self.version)
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            self._keys[(view.name, entities)] = k
        return k

    # ------------------------------------------------------------------ write
    def write(self, rows_by_view: dict[str, list[dict]], event_time: float) -> int:
        ts = Timestamp()
        ts.FromDatetime(datetime.fromtimestamp(event_time, tz=UTC))
        ts_bytes = ts.SerializeToString()
        pipe = self.client.pipeline(transaction=False)
        n = 0
        for view in VIEWS:
            rows = rows_by_view.get(view.name)
            if not rows:
                continue
            fields, ts_field, cols = self.fields[view.name], self.ts_field[view.name], view.stored
            for r in rows:
                mapping = {ts_field: ts_bytes}
                for f, c in zip(fields, cols, strict=True):
                    mapping[f] = b"\x29" + np.float64(r[c]).tobytes()
                pipe.hset(self.key(view, tuple(r[k] for k in view.join_keys)), mapping=mapping)
                n += 1
        pipe.execute()
        return n

    # ------------------------------------------------------------------ read
    def request_keys(
        self, member_id: str, candidates: Sequence[tuple[str, str, str]]
    ) -> list[tuple[View, list[bytes], np.ndarray]]:
        """For each view: its distinct keys and, per candidate, the index of the key it reads."""
        out = []
        for view in VIEWS:
            ents = [
                tuple({"member_id": member_id, "item_id": i, "item_type": t, "actor_id": a}[k] for k in view.join_keys)
                for i, t, a in candidates
            ]
            uniq: dict[tuple[str, ...], int] = {}
            idx = np.fromiter((uniq.setdefault(e, len(uniq)) for e in ents), dtype=np.int64, count=len(ents))
            out.append((view, [self.key(view, e) for e in uniq], idx))
        return out

    def read(self, member_id: str, candidates: Sequence[tuple[str, str, str]]) -> pd.DataFrame:
        """Stored features (``view__column``) of the member and each candidate, in one pipelined round trip."""
        plan = self.request_keys(member_id, candidates)
        pipe = self.client.pipeline(transaction=False)
        for view, keys, _ in plan:
            fields = self.fields[view.name]
            for k in keys:
                pipe.hmget(k, fields)
        replies = pipe.execute()
        columns: dict[str, np.ndarray] = {}
        at = 0
        for view, keys, idx in plan:
            block = replies[at : at + len(keys)]
            at += len(keys)
            values = _decode(block, len(view.stored))  # (len(keys), n_features), NaN where missing
            per_candidate = values[idx] if len(idx) else values[:0]
            for j, c in enumerate(view.stored):
                columns[f"{view.name}__{c}"] = per_candidate[:, j]
        return pd.DataFrame(columns)


def _decode(replies: list[list[bytes | None]], width: int) -> np.ndarray:
    flat = [v for reply in replies for v in reply]
    present = np.fromiter((v is not None for v in flat), dtype=bool, count=len(flat))
    out = np.full(len(flat), np.nan)
    if present.any():
        raw = np.frombuffer(b"".join(v for v in flat if v is not None), dtype=[("tag", "u1"), ("v", "<f8")])
        if (raw["tag"] != _DOUBLE_TAG).any():
            raise ValueError("a stored feature is not a Float64 Value; was the view written by another schema?")
        out[present] = raw["v"]
    return out.reshape(len(replies), width)


def raw_read(
    client: redis.Redis, plan: list[tuple[View, list[bytes], np.ndarray]], fields: dict[str, list[bytes]]
) -> list:
    """The baseline the fast reader is held to: the same HMGETs, pipelined, nothing decoded."""
    pipe = client.pipeline(transaction=False)
    for view, keys, _ in plan:
        for k in keys:
            pipe.hmget(k, fields[view.name])
    return pipe.execute()
