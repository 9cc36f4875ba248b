"""The service's vectorised fold gives the reference fold's numbers, skips replays, and survives a restart
through its packed records; the Redis keys it writes are Feast's."""

import numpy as np
import pyarrow as pa
from feast.infra.online_stores.helpers import _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from features.families import VIEWS, recompute
from features.redis_layout import HsetEncoder
from features.row_state import RowState
from services.traffic import SimulatedTraffic


def _traffic():
    events = list(SimulatedTraffic(members=150, requests=300, seed=11).events())
    # Source positions as a member-keyed topic of 4 partitions would give them.
    counters = [0] * 4
    triples = []
    for e in events:
        p = hash(e.member_id) % 4
        triples.append((e, p, counters[p]))
        counters[p] += 1
    return events, triples


def _assert_equal_to_reference(state: RowState, events) -> None:
    ref = recompute(events)
    assert len(ref) > 500
    for key, want in ref.items():
        got = state.row(key)
        assert got is not None, key
        assert got["n"] == want["n"] and got["as_of"] == want["as_of"], key
        np.testing.assert_allclose(got["imp"], want["imp"], rtol=1e-9, atol=0)
        np.testing.assert_allclose(got["eng"], want["eng"], rtol=1e-9, atol=0)


def test_batches_of_any_size_equal_the_event_by_event_fold():
    events, triples = _traffic()
    # Members see items again and engage after repeats (so the item's windows, counting first
    # impressions, differ from its totals), within one batch too: the batched test is exercised.
    member_item = [row["n"] for key, row in recompute(events).items() if key.startswith("member_item|")]
    assert sum(n[0] >= 2 for n in member_item) > 50
    assert sum(n[0] >= 2 and n[1] > 0 for n in member_item) > 10
    for size in (1, 37, 5000):
        state = RowState(partitions=4)
        for i in range(0, len(triples), size):
            state.fold(triples[i : i + size])
        _assert_equal_to_reference(state, events)


def test_replayed_events_are_skipped_row_by_row():
    events, triples = _traffic()
    state = RowState(partitions=4)
    state.fold(triples[: len(triples) // 2])
    assert state.fold(triples[: len(triples) // 3]) is None  # all seen: nothing changes
    state.fold(triples[len(triples) // 4 :])  # overlaps the first half
    _assert_equal_to_reference(state, events)


def test_a_restart_from_packed_records_continues_exactly():
    events, triples = _traffic()
    half = len(triples) // 2
    first = RowState(partitions=4)
    changed = first.fold(triples[:half])
    records = {k: changed.records[i].tobytes() for i, k in enumerate(changed.keys)}  # the changelog
    second = RowState(partitions=4, load=records.get)
    second.fold(triples[half // 2 :])  # re-reads a quarter that the changelog already holds
    _assert_equal_to_reference(second, events)


def test_changed_rows_expose_the_stored_columns():
    events, triples = _traffic()
    changed = RowState(partitions=4).fold(triples)
    ref = recompute(events)
    for view in VIEWS:
        keys, values = changed.stored(view)
        assert values.shape == (len(keys), len(view.stored))
        want = ref[keys[0]]
        got = dict(zip(view.stored, values[0], strict=True))
        assert got["imp_total"] == want["n"][0] and got["as_of"] == want["as_of"]


def test_entity_keys_are_feasts():
    for view in VIEWS:
        ents = tuple(f"v{j}-é.x" for j in range(len(view.join_keys)))
        proto = EntityKey(join_keys=list(view.join_keys), entity_values=[Value(string_val=e) for e in ents])
        keys = HsetEncoder(view, [b"f"], b"_ts", b"proj").keys([pa.array([e], pa.string()) for e in ents])
        assert keys[0].as_py() == _redis_key("proj", proto, entity_key_serialization_version=3)
