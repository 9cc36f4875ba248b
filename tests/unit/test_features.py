import time

import numpy as np
import pandas as pd
import pytest

from features.families import (
    STORED_COLUMNS,
    VIEW_BY_NAME,
    VIEWS,
    RowKey,
    apply_event,
    ctr,
    derive,
    derive_columns,
    recompute,
    stored_row,
    stored_rows,
)
from features.training_set import build_training_set, stored_features
from feedrank.contracts import EventType, ItemType, MemberEvent
from rankers.baselines import PopularityScorer
from services.traffic import SimulatedTraffic
from tests.unit.events import response

NOW = time.time()


def resp(kind, member="m1", item="p1", actor="m2", item_type=ItemType.POST, ts=NOW - 100):
    return response(kind, ts, member, item, actor, item_type)


def test_every_family_is_updated():
    table = recompute([resp(EventType.IMPRESSION), resp(EventType.IMPRESSION), resp(EventType.CLICK)])
    views = {RowKey.decode(k).view for k in table}
    assert views == {v.name for v in VIEWS}
    assert {v.family for v in VIEWS} == {"X_i", "X_t", "X_ij", "X_ik", "X_ijk", "X_io"}
    row = table[RowKey("member_actor_type", ("m1", "m2", "post")).encode()]
    assert row["n"] == [2, 1, 0]


def test_the_item_counts_first_impressions_and_the_engagements_right_after_them():
    """A fatigued member seeing an item again does not lower its rate; a new viewer counts in full."""
    events = [
        resp(EventType.IMPRESSION, ts=NOW - 30),
        resp(EventType.CLICK, ts=NOW - 29),
        resp(EventType.LIKE, ts=NOW - 28),
        resp(EventType.IMPRESSION, ts=NOW - 20),
        resp(EventType.CLICK, ts=NOW - 19),  # after a second impression: not the first's engagement
        resp(EventType.IMPRESSION, ts=NOW - 10),
        resp(EventType.IMPRESSION, member="m3", ts=NOW),
    ]
    table = recompute(events)
    item = table[RowKey("item_stats", ("p1",)).encode()]
    assert item["n"] == [4, 3, 0]  # the lifetime totals count every event
    assert item["imp"][0] == pytest.approx(0.5 ** (30 / 3600) + 1)  # m1's first impression and m3's
    assert item["eng"][0] == pytest.approx(0.5 ** (29 / 3600) + 0.5 ** (28 / 3600))
    member = table[RowKey("member_stats", ("m1",)).encode()]  # other views count every event
    assert member["imp"][0] == pytest.approx(0.5 ** (20 / 3600) + 0.5 ** (10 / 3600) + 1)
    assert member["eng"][0] == pytest.approx(0.5 ** (19 / 3600) + 0.5 ** (18 / 3600) + 0.5 ** (9 / 3600))


def test_decayed_sums_halve_per_half_life_and_ignore_order():
    events = [
        resp(EventType.IMPRESSION, ts=NOW - 3600),
        resp(EventType.IMPRESSION, ts=NOW),
        resp(EventType.HIDE, ts=NOW - 10),
    ]
    a, b = recompute(events), recompute(events[::-1])
    key = RowKey("member_stats", ("m1",)).encode()
    assert a[key]["as_of"] == NOW
    assert a[key]["imp"] == pytest.approx([1.5, 1 + 0.5 ** (1 / 24), 1 + 0.5 ** (1 / 168)])
    assert a[key]["imp"] == pytest.approx(b[key]["imp"]) and a[key]["n"] == [2, 0, 1]


def test_replayed_events_are_not_counted_twice():
    table: dict = {}
    first = apply_event(resp(EventType.CLICK), table, source=(0, 41))
    again = apply_event(resp(EventType.CLICK), table, source=(0, 41))
    older = apply_event(resp(EventType.CLICK), table, source=(0, 40))
    other_partition = apply_event(resp(EventType.CLICK), table, source=(1, 3))
    assert len(first) == 7 and again == [] and older == []
    assert len(other_partition) == 7
    assert table[RowKey("member_stats", ("m1",)).encode()]["n"] == [0, 2, 0]


def test_non_response_events_change_nothing():
    joined = MemberEvent(event_id="j", event_type=EventType.MEMBER_JOINED, member_id="m1", timestamp=NOW)
    table: dict = {}
    assert apply_event(joined, table) == [] and table == {}


def test_stored_rows_and_derived_features():
    table = recompute([resp(EventType.IMPRESSION, ts=NOW - 86_400), resp(EventType.CLICK, ts=NOW - 86_400)])
    rows = stored_rows(table.keys(), table)
    (actor_row,) = rows["member_actor"]
    assert actor_row["member_id"] == "m1" and actor_row["actor_id"] == "m2" and actor_row["imp_7d"] == 1.0
    stored = pd.DataFrame([{f"member_actor__{k}": v for k, v in actor_row.items()}])
    day_later = derive(stored, NOW)  # decayed by one day at read time
    assert np.expm1(day_later["member_actor__log_imp_7d"][0]) == pytest.approx(0.5 ** (1 / 7))
    assert day_later["member_actor__ctr_7d"][0] == pytest.approx(ctr(0.5 ** (1 / 7), 0.5 ** (1 / 7)))
    nothing = derive(pd.DataFrame(index=[0]), NOW)  # no history: zero counts, the prior rate
    assert nothing["member_stats__log_imp_1h"][0] == 0 and nothing["member_stats__ctr_1h"][0] == pytest.approx(0.05)


def test_a_read_as_one_vector_names_every_column_as_the_stores_do():
    e = resp(EventType.IMPRESSION, ts=NOW - 60)
    table = recompute([resp(EventType.IMPRESSION, ts=NOW - 86_400), resp(EventType.CLICK, ts=NOW - 86_400)])
    del table[RowKey("actor_stats", ("m2",)).encode()]  # a row the store does not hold
    got = stored_features(table, e)
    assert list(got) == STORED_COLUMNS
    want = {
        f"{view}__{c}": v
        for key in table
        for view, cols in [stored_row(key, table[key])]
        for c, v in cols.items()
        if c not in VIEW_BY_NAME[view].join_keys
    }
    assert want and {c: got[c] for c in want} == want
    assert all(np.isnan(v) for c, v in got.items() if c.startswith("actor_stats__"))
    assert {c for c, v in got.items() if not np.isnan(v)} == set(want)


def test_derived_features_need_only_the_served_columns():
    rng = np.random.default_rng(3)
    stored = {f"{v.name}__{c}": rng.uniform(0, 5, 40) for v in VIEWS for c in v.stored}
    for v in VIEWS:
        stored[f"{v.name}__as_of"] = NOW - rng.uniform(0, 86_400, 40)
        stored[f"{v.name}__hide_total"] = rng.integers(0, 2, 40).astype(float)
    served = {f"{v.name}__{c}": stored[f"{v.name}__{c}"] for v in VIEWS for c in v.served}
    assert len(served) < len(stored)
    full, lean = derive_columns(stored, NOW), derive_columns(served, NOW)
    assert full.keys() == lean.keys()
    for name in full:
        np.testing.assert_array_equal(full[name], lean[name], err_msg=name)
    assert lean["member_item__hidden_before"].any()  # the totals the rules read are served


def test_training_rows_are_point_in_time():
    job = MemberEvent(
        event_id="jp",
        event_type=EventType.JOB_POSTED,
        member_id="co1",
        timestamp=NOW - 1000,
        item_id="j1",
        item_type=ItemType.JOB,
        attributes={"skills": ["python"]},
    )
    events = [
        job,
        resp(EventType.IMPRESSION, item="j1", actor="co1", item_type=ItemType.JOB, ts=NOW - 900),
        resp(EventType.IMPRESSION, item="j1", actor="co1", item_type=ItemType.JOB, ts=NOW - 500),
        resp(EventType.APPLY, item="j1", actor="co1", item_type=ItemType.JOB, ts=NOW - 400),
        resp(EventType.IMPRESSION, item="j1", actor="co1", item_type=ItemType.JOB, ts=NOW - 300),
    ]
    rows = build_training_set(reversed(events), {"jobs": PopularityScorer()}, {ItemType.JOB: "jobs"})
    seen = np.expm1(rows["member_item__log_seen"]).round(6).tolist()
    assert seen == [0, 1, 2]  # never counts itself or the future
    assert rows["member_item__engaged_before"].tolist() == [0, 0, 1]
    assert list(rows["label"]) == [1, 1, 0]  # engaged after the first two, not after the third


def test_training_rows_read_the_features_as_of_their_request():
    """The mixer scores a feed's slots together, before any is shown: a later slot's row must not count
    the request's earlier slots, and the next request's rows count them all."""

    def job(i: int) -> MemberEvent:
        return MemberEvent(
            event_id=f"jp{i}",
            event_type=EventType.JOB_POSTED,
            member_id="co1",
            timestamp=NOW - 2000,
            item_id=f"j{i}",
            item_type=ItemType.JOB,
            attributes={"skills": ["python"]},
        )

    def shown(i: int, request: str, ts: float) -> MemberEvent:
        e = resp(EventType.IMPRESSION, item=f"j{i}", actor="co1", item_type=ItemType.JOB, ts=ts)
        return e.model_copy(update={"attributes": {"request_id": request, "position": i}, "event_id": f"{request}{i}"})

    events = [job(i) for i in range(3)]
    events += [shown(i, "r1", NOW - 900 + i) for i in range(3)] + [shown(i, "r2", NOW - 500 + i) for i in range(2)]
    rows = build_training_set(events, {"jobs": PopularityScorer()}, {ItemType.JOB: "jobs"})
    seen = np.expm1(rows["member_stats__log_imp_7d"]).round(2).tolist()  # 7-day windows decay a little
    assert rows["request_id"].tolist() == ["r1"] * 3 + ["r2"] * 2
    assert seen == [0, 0, 0, 3, 3]
    assert (rows["position"].tolist()) == [0, 1, 2, 0, 1]
    # an impression without a request id is read just before it
    bare = [e.model_copy(update={"attributes": {}}) for e in events]
    rows = build_training_set(bare, {"jobs": PopularityScorer()}, {ItemType.JOB: "jobs"})
    assert np.expm1(rows["member_stats__log_imp_7d"]).round(2).tolist() == [0, 1, 2, 3, 4]


def test_training_rows_since_a_time_keep_the_history_before_it():
    """Impressions before ``since`` get no row, yet still count in the features of the later ones."""
    events = list(SimulatedTraffic(members=60, requests=80, seed=5, end_time=NOW).events())
    impressions = sorted(e.timestamp for e in events if e.event_type == EventType.IMPRESSION)
    since = impressions[len(impressions) // 2]
    scorers, types = {"jobs": PopularityScorer()}, {ItemType.JOB: "jobs"}
    every = build_training_set(events, scorers, types)
    later = build_training_set(events, scorers, types, since=since)
    assert 0 < len(later) < len(every) and later["timestamp"].min() >= since
    want = every[every["timestamp"] >= since].reset_index(drop=True)
    pd.testing.assert_frame_equal(later.reset_index(drop=True), want[later.columns], check_like=True)
    assert want["member_item__log_seen"].max() > 0  # the earlier impressions are in those features


def test_simulated_traffic_is_deterministic_and_validates():
    def events(seed):
        return [e.model_dump() for e in SimulatedTraffic(members=60, requests=40, seed=seed, end_time=NOW).events()]

    a, b, c = events(3), events(3), events(4)
    assert a == b and a != c
    assert max(e["timestamp"] for e in a) <= NOW + 60  # the world ends now, so its content is fresh
    with pytest.raises(ValueError, match=r"world\.n_members"):
        SimulatedTraffic(members=0).configs()
