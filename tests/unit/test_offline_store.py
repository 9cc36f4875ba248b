"""The offline store and its point-in-time join: equal to the replay, and never leaking the future."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.families import apply_event, derive, stored_rows
from features.offline import OfflineAppender, point_in_time, read_view
from features.training_set import stored_features
from feedrank.contracts import EventType
from services.traffic import SimulatedTraffic
from tests.unit.events import response

T0 = 1_790_000_000.0


def stream_into_offline(events, root):
    """What the feature service does: fold each event, append the rows it changed."""
    table: dict = {}
    appender = OfflineAppender(root)
    for i, e in enumerate(events):
        changed = apply_event(e, table)
        appender.append(stored_rows(changed, table), written_at=T0 + i)
    return table


def test_a_value_written_after_an_impression_never_appears_in_its_row(tmp_path):
    events = [
        response(EventType.IMPRESSION, T0),
        response(EventType.IMPRESSION, T0 + 100),
        response(EventType.CLICK, T0 + 101),
    ]
    stream_into_offline(events, tmp_path)
    assert len(read_view(tmp_path, "member_item")) == 3  # the click's version is in the store
    imps = pd.DataFrame(
        [
            {"member_id": "m1", "item_id": "p1", "item_type": "post", "actor_id": "m2", "timestamp": t}
            for t in (T0, T0 + 100, T0 + 100.5, T0 + 500)
        ]
    )
    feats = point_in_time(imps, tmp_path)
    # At T0 nothing is known; at T0+100 only the first impression; the click at T0+101 shows up
    # only for the impression after it.
    assert np.expm1(feats["member_item__log_seen"]).round(6).tolist() == [0, 1, 2, 2]
    assert feats["member_item__engaged_before"].tolist() == [0, 0, 0, 1]


def test_point_in_time_join_equals_replay(tmp_path):
    events = sorted(SimulatedTraffic(members=40, requests=30, seed=2, end_time=T0).events(), key=lambda e: e.timestamp)
    table: dict = {}
    appender = OfflineAppender(tmp_path)
    expected_rows, impressions = [], []
    for i, e in enumerate(events):
        if e.event_type == EventType.IMPRESSION:
            impressions.append(
                {
                    "member_id": e.member_id,
                    "item_id": e.item_id,
                    "item_type": e.item_type.value,
                    "actor_id": e.item_actor_id,
                    "timestamp": e.timestamp,
                }
            )
            expected_rows.append(stored_features(table, e))
        appender.append(stored_rows(apply_event(e, table), table), written_at=T0 + i)
    imps = pd.DataFrame(impressions)
    got = point_in_time(imps, tmp_path)
    want = derive(pd.DataFrame(expected_rows, index=imps.index), imps["timestamp"].to_numpy())
    assert len(got) == len(imps) >= 200
    pd.testing.assert_frame_equal(got[sorted(want.columns)], want[sorted(want.columns)], check_exact=False, rtol=1e-9)
