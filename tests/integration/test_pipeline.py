"""The whole feed on real Kafka, Redis and Feast: every service is a separate `feedrank serve` process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pandas as pd
from confluent_kafka import TopicPartition

from features.families import recompute
from features.offline import read_view
from features.store import feature_store
from feedrank.contracts import DeadLetter, RankedFeed, Topic, parse
from services.kafka_io import make_consumer, make_producer, topic

from .conftest import wait_online_equals


def test_feed_mixes_all_four_fprs(pipeline):
    feed: RankedFeed = pipeline["first_feed"]
    assert {i.source for i in feed.items} >= pipeline["expected"]
    assert set(feed.sources_answered) == pipeline["expected"] and not feed.sources_missing
    assert [i.position for i in feed.items] == list(range(len(feed.items)))
    assert len(feed.items) == pipeline["settings"].feed_size
    assert all(0.0 <= i.score <= 1.0 for i in feed.items)
    assert feed.model_version.startswith("spr/")
    assert len({i.item_id for i in feed.items}) == len(feed.items)  # dedupe rule held


def test_feed_cli_prints_json(pipeline):
    s = pipeline["settings"]
    out = subprocess.run(
        [sys.executable, "-m", "feedrank.cli", "feed", "m2", "--json"],
        capture_output=True,
        text=True,
        env=s.child_env(),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    feed = parse(RankedFeed, out.stdout)
    assert feed.member_id == "m2" and feed.items


def test_online_features_equal_batch_recomputation(pipeline, generator):
    """Every row of every family, online, equals folding the same events in one batch."""
    assert wait_online_equals(pipeline["settings"], recompute(generator.events())) == []


def test_offline_store_holds_what_was_written_online(pipeline):
    s = pipeline["settings"]
    hist = read_view(s.feast_dir / "offline", "member_stats")
    assert len(hist) > 0 and {"member_id", "imp_1h", "eng_7d", "as_of", "event_timestamp"} <= set(hist.columns)
    latest = hist.sort_values(["as_of", "written_at"]).groupby("member_id").tail(1).head(20)
    online = pd.DataFrame(
        feature_store(s)
        .get_online_features(
            features=["member_stats:imp_total", "member_stats:as_of"],
            entity_rows=[{"member_id": m} for m in latest["member_id"]],
        )
        .to_dict()
    )
    assert (online["imp_total"].to_numpy() >= latest["imp_total"].to_numpy()).all()


def _read_dead_letters(s, start_offsets: dict[int, int], want: set[str], timeout_s: float = 30) -> list[DeadLetter]:
    consumer = make_consumer(s, f"dl-reader-{uuid.uuid4().hex}")
    name = topic(s, Topic.DEAD_LETTERS)
    consumer.assign([TopicPartition(name, p, o) for p, o in start_offsets.items()])
    found: list[DeadLetter] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and {d.payload for d in found} < want:
            for m in consumer.consume(100, timeout=0.2):
                if not m.error():
                    found.append(parse(DeadLetter, m.value()))
    finally:
        consumer.close()
    return found


def _end_offsets(s) -> dict[int, int]:
    consumer = make_consumer(s, f"dl-probe-{uuid.uuid4().hex}")
    name = topic(s, Topic.DEAD_LETTERS)
    parts = consumer.list_topics(name, timeout=10).topics[name].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] for p in parts}
    consumer.close()
    return ends


def test_bad_input_is_dead_lettered_and_services_survive(pipeline):
    s, sup, client = pipeline["settings"], pipeline["supervisor"], pipeline["client"]
    start = _end_offsets(s)
    marker = uuid.uuid4().hex
    now = time.time()
    bad = {
        Topic.MEMBER_EVENTS: [
            f'{{"broken json {marker}',
            json.dumps({"event_id": f"x{marker}", "event_type": "click", "member_id": "m1", "timestamp": now}),
        ],
        Topic.FEED_REQUESTS: [
            f"not json at all {marker}",
            json.dumps({"request_id": f"r{marker}", "requested_at": now}),  # no member_id
        ],
        Topic.FPR_CANDIDATES: [
            json.dumps(
                {
                    "request_id": f"r{marker}",
                    "member_id": "m1",
                    "source": "jobs",
                    "model_version": "v",
                    "generated_at": now,
                    "candidates": [{"item_id": "j1", "score": 7}],
                }
            ),
            json.dumps(
                {
                    "request_id": f"r{marker}",
                    "member_id": "m1",
                    "source": f"rogue{marker}",
                    "model_version": "v",
                    "generated_at": now,
                    "candidates": [],
                }
            ),
        ],
    }
    producer = make_producer(s)
    for t, payloads in bad.items():
        for p in payloads:
            producer.produce(topic(s, t), p.encode(), key=b"m1")
    producer.flush(10)
    want = {p for ps in bad.values() for p in ps}
    letters = [d for d in _read_dead_letters(s, start, want) if d.payload in want]
    assert {d.payload for d in letters} == want
    assert len(letters) == len(want)  # each dead-lettered exactly once
    reasons = {d.payload: d.reason for d in letters}
    assert "malformed JSON" in reasons[bad[Topic.MEMBER_EVENTS][0]]
    assert "item_id and item_type" in reasons[bad[Topic.MEMBER_EVENTS][1]]
    assert "member_id" in reasons[bad[Topic.FEED_REQUESTS][1]]
    assert "score" in reasons[bad[Topic.FPR_CANDIDATES][0]]
    assert "unknown source" in reasons[bad[Topic.FPR_CANDIDATES][1]]
    by_topic = {d.payload: d.source_topic for d in letters}
    assert by_topic[bad[Topic.FEED_REQUESTS][0]] == topic(s, Topic.FEED_REQUESTS)
    assert sup.dead() == {}
    # Good traffic still flows after the garbage.
    feed = client.feed("m3", timeout_s=30)
    assert feed.items and not feed.sources_missing


def test_feed_fails_open_when_an_fpr_dies(pipeline):
    s, sup, client = pipeline["settings"], pipeline["supervisor"], pipeline["client"]
    sup.kill("fpr-courses")
    try:
        t0 = time.monotonic()
        req = client.request("m4")
        feed = client.wait(req.request_id, timeout_s=30)
        elapsed = time.monotonic() - t0
        assert feed.sources_missing == ["courses"] and feed.timed_out
        assert "courses" not in {i.source for i in feed.items} and feed.items
        assert elapsed < s.gather_deadline_ms / 1000 + 5
    finally:
        sup.start("fpr-courses")
    # The restarted FPR rejoins its consumer group and answers again.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        feed = client.feed("m4", timeout_s=30)
        if "courses" in feed.sources_answered:
            break
    assert "courses" in feed.sources_answered
