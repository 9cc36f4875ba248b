"""Feast's Redis layout, written and read directly: the fast paths of the feature service and the mixer.

Feast keeps one Redis hash per entity key (``serialize_entity_key(...) + project``) with one field per
feature (``mmh3("view:feature")``) holding a serialized ``Value`` proto, and ``_ts:view`` holding
the row's timestamp. This module builds keys and fields with Feast's own functions, so what it writes
Feast's SDK reads and vice versa (a test checks both ways); it only skips Feast's per-row Python
machinery. Every feedrank feature is a Float64, and a Float64 ``Value`` is always 9 bytes (tag 0x29,
then a little-endian double), so a whole response decodes in one numpy call.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import redis
from feast import FeatureStore
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import _versioned_fv_name
from feast.protos.feast.types.Value_pb2 import ValueType
from google.protobuf.timestamp_pb2 import Timestamp
from redis._parsers import BaseParser

from features.families import VIEWS, View

log = logging.getLogger(__name__)

_DOUBLE_TAG = 0x29
_ENCODED_CACHE_MAX = 1_000_000
_STRING = ValueType.STRING
_ENTITY_HEAD: dict[str, tuple[bytes, list[int]]] = {}


# Every HMGET of one feed request, run inside Redis by one EVALSHA. KEYS: the keys, view by view; ARGV:
# per view, its key count, its field count, then its fields. Replies with one string per view: every
# key's fields in order, each a 9-byte Float64 ``Value`` or 9 zero bytes where the field is missing, so
# the client decodes a view with one ``np.frombuffer``. With 400 candidates (about 2,000 keys, 20,000
# fields) the nested reply of plain HMGETs cost the mixer more to parse than the rest of the feed.
HMGET_MANY = """
local out, k, a = {}, 1, 1
local missing = string.rep('\\0', 9)
while a <= #ARGV do
  local nkeys, nfields = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local fields = {}
  for f = 1, nfields do fields[f] = ARGV[a + 1 + f] end
  a = a + 2 + nfields
  local parts, n = {}, 0
  for _ = 1, nkeys do
    local values = redis.call('HMGET', KEYS[k], unpack(fields))
    for f = 1, nfields do
      local v = values[f]
      n = n + 1
      if not v then
        parts[n] = missing
      elseif #v ~= 9 then
        return redis.error_reply('field ' .. f .. ' of key ' .. k .. ' is not a Float64 Value')
      else
        parts[n] = v
      end
    end
    k = k + 1
  end
  out[#out + 1] = table.concat(parts)
end
return out
"""


class FeastRedisLayout:
    """Keys and fields of every view, computed once."""

    def __init__(self, store: FeatureStore, client: redis.Redis) -> None:
        self.client = client
        self.project = store.project
        self.version = store.config.entity_key_serialization_version
        fvs = {fv.name: fv for fv in store.list_feature_views()}
        self.fields: dict[str, list[bytes]] = {}  # per view, its stored columns' fields
        self.served_fields: dict[str, list[bytes]] = {}  # per view, its served columns' fields
        self.ts_field: dict[str, bytes] = {}
        for view in VIEWS:
            name = _versioned_fv_name(fvs[view.name], store.config)
            self.fields[view.name] = [_mmh3(f"{name}:{c}") for c in view.stored]
            self.served_fields[view.name] = [_mmh3(f"{name}:{c}") for c in view.served]
            self.ts_field[view.name] = f"_ts:{name}".encode()
        if self.version != 3:
            raise ValueError(f"entity_key_serialization_version {self.version}: only version 3 is supported")
        self.project_bytes = self.project.encode()
        self._encoded: dict[str, bytes] = {}
        self._hmget_many = client.register_script(HMGET_MANY)
        self._hset = {
            view.name: HsetEncoder(view, self.fields[view.name], self.ts_field[view.name], self.project_bytes)
            for view in VIEWS
        }

    # ------------------------------------------------------------------ write
    def write(self, rows_by_view: dict[str, list[dict]], event_time: float) -> int:
        """Rows as dicts of join keys and stored columns (convenient; the service uses ``encode_hsets``)."""
        batches = {}
        for view in VIEWS:
            rows = rows_by_view.get(view.name)
            if rows:
                columns = [pa.array([r[k] for r in rows], pa.string()) for k in view.join_keys]
                values = np.array([[r[c] for c in view.stored] for r in rows], dtype=np.float64)
                batches[view.name] = (columns, values)
        payload, n = self.encode_hsets(batches, event_time)
        if n:
            send_pipelined(self.client, payload, n)
        return n

    def encode_hsets(
        self, batches: dict[str, tuple[Sequence[pa.Array], np.ndarray]], event_time: float
    ) -> tuple[bytes, int]:
        """Per view, the rows' join-key columns (``join_keys`` order) and stored columns (``stored``
        order) -> (one HSET per row, RESP-encoded and concatenated; how many), for ``send_pipelined``."""
        ts = Timestamp()
        ts.FromDatetime(datetime.fromtimestamp(event_time, tz=UTC))
        ts_bytes = ts.SerializeToString()
        chunks: list[bytes] = []
        n = 0
        for view in VIEWS:
            if view.name in batches:
                columns, values = batches[view.name]
                chunks.append(self._hset[view.name].encode(columns, values, ts_bytes))
                n += len(values)
        return b"".join(chunks), n

    # ------------------------------------------------------------------ read
    def request_keys(
        self, member_id: str, candidates: Sequence[tuple[str, str, str]]
    ) -> list[tuple[View, list[bytes], np.ndarray]]:
        """For each view: its distinct keys and, per candidate, the index of the key it reads. A key is its
        view's head, its entity values' encodings (cached: members, items and actors recur) and the project."""
        ids, types, actors = (list(c) for c in zip(*candidates, strict=True)) if candidates else ([], [], [])
        columns = {"member_id": [member_id] * len(ids), "item_id": ids, "item_type": types, "actor_id": actors}
        if len(self._encoded) > _ENCODED_CACHE_MAX:
            self._encoded.clear()
        enc = self._encode
        out = []
        for view in VIEWS:
            head, order = _entity_head(view)
            names = [view.join_keys[j] for j in order]
            uniq: dict = {}
            if len(names) == 1:
                idx = np.fromiter((uniq.setdefault(e, len(uniq)) for e in columns[names[0]]), np.int64, len(ids))
                keys = [head + enc(e) + self.project_bytes for e in uniq]
            else:
                ents = zip(*(columns[k] for k in names), strict=True)
                idx = np.fromiter((uniq.setdefault(e, len(uniq)) for e in ents), np.int64, len(ids))
                keys = [head + b"".join(map(enc, e)) + self.project_bytes for e in uniq]
            out.append((view, keys, idx))
        return out

    def _encode(self, value: str) -> bytes:
        """One entity value as Feast's key holds it: its type, its length, its UTF-8 bytes."""
        b = self._encoded.get(value)
        if b is None:
            raw = value.encode()
            b = self._encoded[value] = struct.pack("<II", _STRING, len(raw)) + raw
        return b

    def read(self, member_id: str, candidates: Sequence[tuple[str, str, str]]) -> pd.DataFrame:
        """:meth:`read_columns` of every stored column, as a DataFrame."""
        return pd.DataFrame(self.read_columns(member_id, candidates))

    def read_columns(
        self,
        member_id: str,
        candidates: Sequence[tuple[str, str, str]],
        served_only: bool = False,
        shared: SharedRows | None = None,
    ) -> dict[str, np.ndarray]:
        """Stored features (``view__column``; only each view's ``served`` columns if ``served_only``) of
        the member and each candidate, in one round trip: one script call runs every HMGET inside Redis
        (see ``HMGET_MANY``). With ``shared``, rows of views keyed without the member come from it when
        it has them, and the ones read are put in it."""
        plan = self.request_keys(member_id, candidates)
        fields = self.served_fields if served_only else self.fields
        keys: list[bytes] = []
        args: list[bytes | int] = []
        hits: list[tuple[list[np.ndarray | None], list[bytes]] | None] = []
        for view, view_keys, _ in plan:
            cached = shared.lookup(view, view_keys) if shared is not None else None
            hits.append(cached)
            ask = cached[1] if cached is not None else view_keys
            keys += ask
            args += [len(ask), len(fields[view.name]), *fields[view.name]]
        replies = self._hmget_many(keys=keys, args=args) if keys else [b""] * len(plan)
        columns: dict[str, np.ndarray] = {}
        for (view, _, idx), packed, cached in zip(plan, replies, hits, strict=True):
            names = view.served if served_only else view.stored
            rows = _decode(packed, len(names))
            if cached is not None and shared is not None:
                rows = shared.merge(view, cached, rows)
            per_candidate = rows[idx]  # (candidates, names), NaN where missing
            for j, c in enumerate(names):
                columns[f"{view.name}__{c}"] = per_candidate[:, j]
        return columns


class SharedRows:
    """Rows of the views keyed without the member (an item's, an actor's stats), shared by every
    request for ``ttl_s``: hundreds of requests a second read the same few thousand items, and these
    views are about 40% of a request's keys. Rows are at most ``ttl_s`` older than Redis's (a generation
    is dropped whole when it ages out); one instance serves one set of columns (served or stored)."""

    def __init__(self, ttl_s: float, max_rows: int = 500_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_rows = max_rows
        self.clock = clock
        self._rows: dict[tuple[str, bytes], np.ndarray] = {}
        self._born = float("-inf")
        self.hits = 0
        self.misses = 0

    def lookup(self, view: View, keys: list[bytes]) -> tuple[list[np.ndarray | None], list[bytes]] | None:
        """(each key's cached row or None, the keys to read), or None for a view keyed by the member."""
        if "member_id" in view.join_keys:
            return None
        now = self.clock()
        if now - self._born > self.ttl_s or len(self._rows) > self.max_rows:
            self._rows.clear()
            self._born = now
        get, name = self._rows.get, view.name
        found = [get((name, k)) for k in keys]
        missing = [k for k, r in zip(keys, found, strict=True) if r is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        return found, missing

    def merge(self, view: View, cached: tuple[list[np.ndarray | None], list[bytes]], read: np.ndarray) -> np.ndarray:
        """Every key's row, in ``lookup``'s order: the cached ones, and ``read`` (the missing keys' rows,
        in order), which are kept."""
        found, missing = cached
        name = view.name
        for k, row in zip(missing, read, strict=True):
            self._rows[(name, k)] = row
        if not missing:
            return np.array(found) if found else read
        it = iter(read)
        return np.array([r if r is not None else next(it) for r in found])


def _entity_head(view: View) -> tuple[bytes, list[int]]:
    """The start of a view's keys (join-key count and names, sorted) and the order values follow in."""
    head = _ENTITY_HEAD.get(view.name)
    if head is None:
        order = sorted(range(len(view.join_keys)), key=lambda j: view.join_keys[j])
        names = [view.join_keys[j].encode() for j in order]
        head = _ENTITY_HEAD[view.name] = (
            struct.pack("<I", len(order)) + b"".join(struct.pack("<II", _STRING, len(n)) + n for n in names),
            order,
        )
    return head


class HsetEncoder:
    """RESP-encoded ``HSET key _ts:view TS f1 v1 ... fn vn`` for many rows of one view, with no Python
    step per row: Arrow joins each row's key from its entity columns, numpy lays out the rest (every
    field is a 4-byte mmh3 hash and every value a 9-byte Float64 ``Value``, so it has a fixed width),
    and the commands come out of one Arrow buffer.
    """

    def __init__(self, view: View, fields: list[bytes], ts_field: bytes, project: bytes) -> None:
        self.key_head, self.order = _entity_head(view)
        self.project = project
        self.head = b"*%d\r\n$4\r\nHSET\r\n$" % (2 + 2 * (len(fields) + 1))
        self.ts_field = b"$%d\r\n%s\r\n" % (len(ts_field), ts_field)
        dtype: list[tuple[str, str]] = []
        constants: dict[str, bytes] = {}
        for j, f in enumerate(fields):
            pre = b"$%d\r\n%s\r\n$9\r\n\x29" % (len(f), f)
            dtype += [(f"p{j}", f"V{len(pre)}"), (f"v{j}", "<f8"), (f"s{j}", "V2")]
            constants[f"p{j}"], constants[f"s{j}"] = pre, b"\r\n"
        self.dtype = np.dtype(dtype)
        self.template = np.zeros((), dtype=self.dtype)
        for name, raw in constants.items():
            self.template[name] = np.frombuffer(raw, dtype=self.dtype[name])[0]
        self.width = len(fields)

    def keys(self, columns: Sequence[pa.Array]) -> pa.Array:
        """Feast's Redis keys (``_redis_key``, serialization version 3) of rows from their join-key
        columns: the join-key count, the sorted join keys, then their string values, each length-prefixed,
        then the project."""
        n = len(columns[0])
        parts: list[pa.Array | pa.Scalar] = [_binary(self.key_head)]
        for j in self.order:
            value = columns[j].cast(pa.large_binary())
            type_and_length = np.empty(n, dtype=[("type", "<u4"), ("length", "<u4")])
            type_and_length["type"] = _STRING
            type_and_length["length"] = pc.binary_length(value).to_numpy(zero_copy_only=False)
            parts += [_fixed_width(type_and_length.tobytes(), 8, n), value]
        parts.append(_binary(self.project))
        return pc.binary_join_element_wise(*parts, _binary(b""))

    def encode(self, columns: Sequence[pa.Array], values: np.ndarray, ts: bytes) -> bytes:
        n = len(values)
        if values.shape != (n, self.width) or any(len(c) != n for c in columns):
            raise ValueError(f"values of shape {values.shape} for {[len(c) for c in columns]} rows of {self.width}")
        if n == 0:
            return b""
        keys = self.keys(columns)
        key_lengths = pc.cast(pc.binary_length(keys), pa.string()).cast(pa.large_binary())
        block = np.empty(n, dtype=self.dtype)
        block[...] = self.template
        for j in range(self.width):
            block[f"v{j}"] = values[:, j]
        after_key = b"\r\n" + self.ts_field + b"$%d\r\n%s\r\n" % (len(ts), ts)
        commands = pc.binary_join_element_wise(
            _binary(self.head),
            key_lengths,
            _binary(b"\r\n"),
            keys,
            _binary(after_key),
            _fixed_width(block.tobytes(), self.dtype.itemsize, n),
            _binary(b""),
        )
        return _concatenated(commands)


def _binary(raw: bytes) -> pa.Scalar:
    return pa.scalar(raw, pa.large_binary())


def _fixed_width(raw: bytes, width: int, n: int) -> pa.Array:
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(raw)]).cast(pa.large_binary())


def _concatenated(values: pa.Array) -> bytes:
    """A large_binary array's values back to back: the slice of its data buffer they occupy."""
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset : values.offset + len(values) + 1]
    return values.buffers()[2][int(offsets[0]) : int(offsets[-1])].to_pybytes()


def send_pipelined(client: redis.Redis, payload: bytes, replies: int) -> None:
    """Send pre-encoded single-line-reply commands (HSETs) on one connection and read every reply.

    The replies are counted in the raw bytes rather than parsed one by one (redis-py spends ~2 us a
    reply); each is one line, ``:n`` or ``-error``. The first error is raised.
    """
    conn = client.connection_pool.get_connection()
    try:
        conn.send_packed_command([payload])
        sock = conn._sock  # redis-py's connected (plain or TLS) socket
        buffered, lines, first_error = b"", 0, None
        while lines < replies:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise redis.ConnectionError("Redis closed the connection while replying")
            data = buffered + chunk
            end = data.rfind(b"\r\n") + 2
            complete, buffered = data[:end], data[end:]
            lines += complete.count(b"\r\n")
            if first_error is None and (complete.startswith(b"-") or b"\n-" in complete):
                at = 0 if complete.startswith(b"-") else complete.index(b"\n-") + 1
                first_error = complete[at : complete.index(b"\r\n", at)].decode(errors="replace")
        if lines != replies or buffered:
            raise redis.ConnectionError(f"expected {replies} replies from Redis, got {lines}")
        if first_error is not None:
            # As redis-py classes it: "-LOADING" (a restarted Redis still reading its append-only file)
            # is a BusyLoadingError, a ConnectionError; "-READONLY" (a failed-over primary) a ReadOnlyError.
            raise BaseParser.parse_error(first_error[1:])
    except BaseException:
        conn.disconnect()
        raise
    finally:
        client.connection_pool.release(conn)


REDIS_OUTAGE_S = 300.0  # how long a Redis outage is waited out before the worker exits (and replays)
# Transient: Redis restarting (refused, reset, or still loading its data) or failing over (a replica
# answering READONLY until it is promoted). Any other error reply is a bug, raised at once.
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError, redis.exceptions.MasterDownError)


def send_while_redis_returns(client: redis.Redis, payload: bytes, n: int, outage_s: float = REDIS_OUTAGE_S) -> None:
    """``send_pipelined``, retried while Redis is down (a restart, a failover) for up to ``outage_s``: the
    HSETs write whole rows, so sending the same payload again is harmless, and the consumer waits on
    this write rather than exit and re-read everything."""
    delay, since = 0.05, time.monotonic()
    while True:
        try:
            send_pipelined(client, payload, n)
            return
        except _TRANSIENT as err:
            if time.monotonic() - since > outage_s:
                raise
            log.warning("Redis unavailable (%s: %s); retrying %d rows in %.2f s", type(err).__name__, err, n, delay)
            time.sleep(delay)
            delay = min(2 * delay, 2.0)


def _decode(packed: bytes, width: int) -> np.ndarray:
    """One view's reply from ``HMGET_MANY`` -> (keys, width) floats, NaN where a field is missing."""
    raw = np.frombuffer(packed, dtype=[("tag", "u1"), ("v", "<f8")])
    present = raw["tag"] == _DOUBLE_TAG
    if not (present | (raw["tag"] == 0)).all():
        raise ValueError("a stored feature is not a Float64 Value; was the view written by another schema?")
    return np.where(present, raw["v"], np.nan).reshape(-1, width)


def raw_read(
    client: redis.Redis, plan: list[tuple[View, list[bytes], np.ndarray]], fields: dict[str, list[bytes]]
) -> list:
    """The baseline the fast reader is held to: the same HMGETs, pipelined, nothing decoded."""
    pipe = client.pipeline(transaction=False)
    for view, keys, _ in plan:
        for k in keys:
            pipe.hmget(k, fields[view.name])
    return pipe.execute()
