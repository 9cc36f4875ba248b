"""The mixer's impression log: served items joined with the member's impressions and actions."""

import gc
import time

import pyarrow.parquet as pq

from feedrank.contracts import EventType, FeedItem, ItemType, MemberEvent, RankedFeed
from services.impression_log import IMPRESSION_SCHEMA, ImpressionJoiner, ImpressionLogWriter, read_impression_log
from simulator.logs import LOG_SCHEMA, read_log

NOW = time.time()
_n = iter(range(10**6))


def feed(request_id="r1", items=("p1", "j1", "c1")) -> RankedFeed:
    types = {"p": ItemType.POST, "j": ItemType.JOB, "c": ItemType.COURSE}
    return RankedFeed(
        request_id=request_id,
        member_id="m1",
        generated_at=NOW,
        items=[
            FeedItem(
                item_id=i,
                item_type=types[i[0]],
                actor_id="a1",
                source="network",
                score=0.1 * (k + 1),
                position=k,
                propensity=0.5,
            )
            for k, i in enumerate(items)
        ],
        sources_answered=["network"],
        model_version="spr/v1",
    )


def event(kind, item, request_id="r1", **attrs) -> MemberEvent:
    return MemberEvent(
        event_id=f"e{next(_n)}",
        event_type=kind,
        member_id="m1",
        timestamp=NOW,
        item_id=item,
        item_type=ItemType.POST if item.startswith("p") else ItemType.JOB,
        item_actor_id="a1",
        attributes={"request_id": request_id, **attrs},
    )


def test_only_impressed_items_become_rows_with_their_actions():
    j = ImpressionJoiner(window_s=10)
    j.served(feed(), requested_at=NOW - 1, now=100.0)
    j.observe(event(EventType.IMPRESSION, "p1", true_p=0.2))
    j.observe(event(EventType.CLICK, "p1"))
    j.observe(event(EventType.LIKE, "p1"))
    j.observe(event(EventType.IMPRESSION, "j1"))
    j.observe(event(EventType.CLICK, "j1", request_id="other"))  # another request's click: not this row's
    j.observe(event(EventType.CLICK, "p9"))  # never served
    assert j.due(now=109.0) == [] and len(j) == 3  # window still open
    rows = {r["item_id"]: r for r in j.due(now=111.0)}
    assert set(rows) == {"p1", "j1"} and len(j) == 0  # c1 was never impressed
    assert rows["p1"]["clicked"] and rows["p1"]["liked"] and not rows["p1"]["applied"]
    assert rows["p1"]["true_p"] == 0.2 and rows["p1"]["propensity"] == 0.5 and rows["p1"]["position"] == 0
    assert not rows["j1"]["clicked"] and rows["j1"]["predicted"] == 0.2
    assert rows["j1"]["timestamp"] == NOW - 1 and rows["j1"]["model_version"] == "spr/v1"


def test_pending_rows_cost_the_garbage_collector_nothing():
    # a mixer holds a window's worth of them; rows of plain values are never walked by a collection
    j = ImpressionJoiner(window_s=10)
    j.served(feed(), requested_at=NOW, now=0.0)
    j.observe(event(EventType.IMPRESSION, "p1", true_p=0.3))
    j.observe(event(EventType.CLICK, "p1"))
    assert j._served and not any(gc.is_tracked(row) for row in j._served.values())


def test_windows_expire_in_serving_order():
    j = ImpressionJoiner(window_s=5)
    j.served(feed("r1", ("p1",)), NOW, now=0.0)
    j.served(feed("r2", ("p2",)), NOW, now=3.0)
    j.observe(event(EventType.IMPRESSION, "p1", "r1"))
    j.observe(event(EventType.IMPRESSION, "p2", "r2"))
    assert [r["request_id"] for r in j.due(6.0)] == ["r1"]
    assert [r["request_id"] for r in j.flush()] == ["r2"] and len(j) == 0


def test_written_log_reads_back_in_the_logged_traffic_format(tmp_path):
    j = ImpressionJoiner(window_s=1)
    j.served(feed(), NOW, now=0.0)
    for item in ("p1", "j1", "c1"):
        j.observe(event(EventType.IMPRESSION, item))
    j.observe(event(EventType.APPLY, "j1"))
    writer = ImpressionLogWriter(tmp_path, "w1")
    path = writer.write(j.due(2.0))
    assert path is not None and writer.rows_written == 3 and writer.write([]) is None
    assert pq.read_schema(path).names == IMPRESSION_SCHEMA.names
    assert set(LOG_SCHEMA.names) <= set(IMPRESSION_SCHEMA.names)
    df = read_log(path)  # the evaluation reader accepts it
    assert sorted(df["item_id"]) == ["c1", "j1", "p1"] and df.loc[df["item_id"] == "j1", "applied"].item()
    assert read_impression_log(tmp_path).num_rows == 3
    assert not list(tmp_path.glob(".*.tmp"))
