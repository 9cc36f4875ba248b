"""Feast's Redis layout, written and read directly: the fast paths of the feature service and the mixer.

Feast keeps one Redis hash per entity key (``serialize_entity_key(...) + project``) with one field per
feature (``mmh3("view:feature")``) holding a serialized ``Value`` proto, and ``_ts:view`` holding
the row's timestamp. This module builds keys and fields with Feast's own functions, so what it writes
Feast's SDK reads and vice versa (a test checks both ways); it only skips Feast's per-row Python
machinery. Every feedrank feature is a Float64, and a Float64 ``Value`` is always 9 bytes (tag 0x29,
then a little-endian double), so a whole response decodes in one numpy call.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import redis
from feast import FeatureStore
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import _versioned_fv_name
from feast.protos.feast.types.Value_pb2 import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from features.families import VIEWS, View

_DOUBLE_TAG = 0x29
_KEY_CACHE_MAX = 2_000_000
_STRING = ValueType.STRING
_ENTITY_HEAD: dict[str, tuple[bytes, list[int]]] = {}


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
        if self.version != 3:
            raise ValueError(f"entity_key_serialization_version {self.version}: only version 3 is supported")
        self.project_bytes = self.project.encode()
        self._keys: dict[tuple[str, tuple[str, ...]], bytes] = {}
        self._hset = {view.name: HsetEncoder(self.fields[view.name], self.ts_field[view.name]) for view in VIEWS}

    def uncached_key(self, view: View, entities: tuple[str, ...]) -> bytes:
        """For callers that keep their own cache (the feature service caches it with the entities)."""
        return entity_key(view, entities, self.project_bytes)

    def key(self, view: View, entities: tuple[str, ...]) -> bytes:
        k = self._keys.get((view.name, entities))
        if k is None:
            k = self.uncached_key(view, entities)
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            self._keys[(view.name, entities)] = k
        return k

    # ------------------------------------------------------------------ write
    def write(self, rows_by_view: dict[str, list[dict]], event_time: float) -> int:
        """Rows as dicts of join keys and stored columns (convenient; the service uses ``write_views``)."""
        batches = {}
        for view in VIEWS:
            rows = rows_by_view.get(view.name)
            if rows:
                entities = [tuple(r[k] for k in view.join_keys) for r in rows]
                values = np.array([[r[c] for c in view.stored] for r in rows], dtype=np.float64)
                batches[view.name] = (entities, values)
        return self.write_views(batches, event_time)

    def write_views(self, batches: dict[str, tuple[Sequence[tuple[str, ...]], np.ndarray]], event_time: float) -> int:
        """Per view, entity tuples and their stored columns (``view.stored`` order)."""
        keyed = {}
        for view in VIEWS:
            if view.name in batches:
                entities, values = batches[view.name]
                keyed[view.name] = ([self.key(view, e) for e in entities], values)
        return self.write_keyed(keyed, event_time)

    def write_keyed(self, batches: dict[str, tuple[Sequence[bytes], np.ndarray]], event_time: float) -> int:
        """Per view, Redis keys (``key``) and stored columns: one HSET per row, the whole micro-batch sent
        as one pipelined write of pre-encoded commands."""
        ts = Timestamp()
        ts.FromDatetime(datetime.fromtimestamp(event_time, tz=UTC))
        ts_bytes = ts.SerializeToString()
        chunks: list[bytes] = []
        n = 0
        for view in VIEWS:
            if view.name in batches:
                keys, values = batches[view.name]
                chunks.append(self._hset[view.name].encode(keys, values, ts_bytes))
                n += len(keys)
        if n:
            _send_pipelined(self.client, b"".join(chunks), n)
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


def entity_key(view: View, entities: Sequence[str], project: bytes) -> bytes:
    """Feast's Redis key for an entity (``_redis_key``, serialization version 3), without protobufs:
    the join-key count, the sorted join keys, then their string values, each length-prefixed."""
    head = _ENTITY_HEAD.get(view.name)
    if head is None:
        order = sorted(range(len(view.join_keys)), key=lambda j: view.join_keys[j])
        head = _ENTITY_HEAD[view.name] = (
            struct.pack("<I", len(order))
            + b"".join(
                struct.pack("<II", _STRING, len(view.join_keys[j].encode())) + view.join_keys[j].encode() for j in order
            ),
            order,
        )
    prefix, order = head
    parts = [prefix]
    for j in order:
        v = entities[j].encode()
        parts.append(struct.pack("<II", _STRING, len(v)))
        parts.append(v)
    parts.append(project)
    return b"".join(parts)


class HsetEncoder:
    """RESP-encoded ``HSET key _ts:view TS f1 v1 ... fn vn`` for many rows of one view at once.

    Every field is a 4-byte mmh3 hash and every value a 9-byte Float64 ``Value``, so a row's field block
    has a fixed layout: numpy fills the doubles into it for all rows in one go.
    """

    def __init__(self, fields: list[bytes], ts_field: bytes) -> None:
        self.head = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (len(fields) + 1))
        self.ts_field = b"$%d\r\n%s\r\n" % (len(ts_field), ts_field)
        dtype, self._prefixes = [], []
        for j, f in enumerate(fields):
            pre = b"$%d\r\n%s\r\n$9\r\n\x29" % (len(f), f)
            dtype += [(f"p{j}", f"V{len(pre)}"), (f"v{j}", "<f8"), (f"s{j}", "V2")]
            self._prefixes.append(np.frombuffer(pre, dtype=f"V{len(pre)}")[0])
        self.dtype = np.dtype(dtype)
        self._crlf = np.frombuffer(b"\r\n", dtype="V2")[0]

    def encode(self, keys: Sequence[bytes], values: np.ndarray, ts: bytes) -> bytes:
        n = len(keys)
        if values.shape != (n, len(self._prefixes)):
            raise ValueError(f"values of shape {values.shape} for {n} rows of {len(self._prefixes)} fields")
        block = np.empty(n, dtype=self.dtype)
        for j, pre in enumerate(self._prefixes):
            block[f"p{j}"] = pre
            block[f"v{j}"] = values[:, j]
            block[f"s{j}"] = self._crlf
        raw = block.tobytes()
        w = self.dtype.itemsize
        ts_part = self.ts_field + b"$%d\r\n%s\r\n" % (len(ts), ts)
        head = self.head
        return b"".join(
            b"%s$%d\r\n%s\r\n%s%s" % (head, len(k), k, ts_part, raw[i * w : (i + 1) * w]) for i, k in enumerate(keys)
        )


def _send_pipelined(client: redis.Redis, payload: bytes, replies: int) -> None:
    """Send pre-encoded commands on one connection and read every reply; the first error is raised."""
    conn = client.connection_pool.get_connection()
    try:
        conn.send_packed_command([payload])
        error = None
        for _ in range(replies):
            try:
                conn.read_response()
            except redis.ResponseError as err:  # keep reading, so the connection stays in step
                error = error or err
        if error is not None:
            raise error
    except BaseException:
        conn.disconnect()
        raise
    finally:
        client.connection_pool.release(conn)


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
