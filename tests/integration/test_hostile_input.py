"""Hostile input on every input topic, against the real feature service and mixer: hypothesis draws
over 10,000 malformed or hostile messages per topic (invalid JSON, wrong types, missing and unknown
fields, huge payloads, far-future and negative timestamps, duplicates) mixed with good ones (unknown
members and items included). No service dies (the FPR services, started after, read it all too);
every bad message is dead-lettered exactly once, with a reason, and located by its topic, partition
and offset; every good one is processed: the online features equal a recomputation from the good
events alone, and every good request gets exactly one feed that names the FPRs that answered it
(this test plays the FPRs, so it knows which did)."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from features.families import recompute
from feedrank.contracts import DeadLetter, MemberEvent, RankedFeed, Topic, parse
from services.demo import train_missing_fprs
from services.kafka_io import LagProbe, consume_ready, drop_topics, make_consumer, make_producer, topic
from services.runtime import assign_from_beginning
from services.supervisor import Supervisor
from services.train_spr import train_spr

from .conftest import isolated_settings, wait_online_equals

PER_TOPIC = 10_000  # bad messages per input topic, at least
BATCH = 50  # messages drawn per hypothesis example
SOURCES = ("network", "jobs", "courses", "people")
ITEM_TYPES = ("post", "job", "course", "member")
RESPONSES = ("impression", "click", "like", "comment", "share", "hide", "apply", "enroll", "connect")

ids = st.from_regex(r"[a-z]{1,3}[0-9]{1,4}", fullmatch=True)
# Values no lax coercion turns into a valid string or timestamp.
not_a_string = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=3))
not_a_number = st.one_of(st.text(alphabet="xyz", min_size=1, max_size=5), st.lists(st.integers(), max_size=3))
NUMERIC = {"timestamp", "requested_at", "generated_at", "feed_size"}


@dataclass
class Sent:
    """What the test produced; delivery reports fill in where each bad message landed."""

    bad: dict[tuple[str, int, int], str] = field(default_factory=dict)  # (topic, partition, offset) -> kind
    kinds: Counter = field(default_factory=Counter)  # (topic, kind) -> bad messages sent
    good_events: list[MemberEvent] = field(default_factory=list)
    requests: dict[str, set[str]] = field(default_factory=dict)  # good request -> the sources that answered it


# Ways to break a message, weighted: a huge payload is a few per cent (each is over 64 KiB).
SPOILS = [
    *["truncated", "binary", "not_object", "wrong_type", "missing", "unknown_field", "future", "negative"] * 3,
    "huge",
]


def spoil(draw, good: dict, required: tuple[str, ...], when: str, limit: int) -> tuple[str, bytes]:
    """One way to break a good message (as a dict): the kind, and the bytes."""
    kind = draw(st.sampled_from(SPOILS))
    d = dict(good)
    if kind == "truncated":
        raw = json.dumps(d).encode()
        return kind, raw[: int(len(raw) * draw(st.floats(0, 0.999)))]
    if kind == "binary":
        return kind, b"\xff" + draw(st.binary(max_size=40))
    if kind == "not_object":
        return kind, json.dumps(draw(st.lists(st.integers(), max_size=3) | st.text(max_size=5) | st.none())).encode()
    if kind == "wrong_type":
        name = draw(st.sampled_from(list(d)))
        if name == "candidates":
            d[name] = draw(st.integers() | st.text(max_size=3))
        else:
            d[name] = draw(not_a_number if name in NUMERIC else not_a_string)
    elif kind == "missing":
        del d[draw(st.sampled_from(required))]
    elif kind == "unknown_field":
        d[f"x_{draw(ids)}"] = draw(st.integers() | st.text(max_size=5))
    elif kind == "huge":
        d["padding"] = "z" * (limit + draw(st.integers(1, 1000)))
    elif kind == "future":
        d[when] = time.time() + draw(st.floats(3 * 86_400, 1e11))
    else:
        d[when] = -draw(st.floats(0, 1e10))
    return kind, json.dumps(d).encode()


@st.composite
def member_events(draw) -> list[tuple[str, bytes, str | None]]:
    """A batch of (key, bytes, kind of badness or None): a quarter good, some of those sent twice."""
    out = []
    now = time.time()
    rng = random.Random(draw(st.integers(0, 2**32)))  # the good messages' contents; hypothesis draws the faults
    for _ in range(BATCH):
        item_type = rng.choice(ITEM_TYPES)
        good = {
            "event_id": uuid.uuid4().hex,
            "event_type": rng.choice(RESPONSES),
            "member_id": rng.choice(["m1", "m2", "m3", f"unknown-{rng.randrange(10**6)}"]),
            "timestamp": now - rng.uniform(0, 86_000),
            "item_id": f"{item_type[0]}{rng.randrange(400)}",
            "item_type": item_type,
            "item_actor_id": f"a{rng.randrange(60)}",
        }
        if draw(st.integers(0, 3)) == 0:
            raw = json.dumps(good).encode()
            out.append((good["member_id"], raw, None))
            if draw(st.integers(0, 9)) == 0:  # the same event again: a duplicate, not to be counted twice
                out.append((good["member_id"], raw, "duplicate"))
        else:
            required = ("event_id", "event_type", "member_id", "timestamp")
            kind, raw = spoil(draw, good, required, "timestamp", MemberEvent.MAX_BYTES)
            out.append((good["member_id"], raw, kind))
    return out


def a_candidate(item_id: str, item_type: str, score: float) -> dict:
    return {"item_id": item_id, "item_type": item_type, "actor_id": f"a{sum(map(ord, item_id)) % 50}", "score": score}


def answer(rng: random.Random, rid: str, member_id: str, source: str) -> dict:
    cands = []
    for i in range(rng.randrange(31)):
        t = rng.choice(ITEM_TYPES)
        cands.append(a_candidate(f"{t[0]}{rng.randrange(500)}-{i}", t, rng.random()))
    return {
        "request_id": rid,
        "member_id": member_id,
        "source": source,
        "model_version": "fuzz",
        "generated_at": time.time(),
        "candidates": cands,
    }


ANSWER_SPOILS = ["spoiled"] * 6 + ["score", "unknown_source", "orphan"] * 2


@st.composite
def request_traffic(draw) -> list[tuple[Topic, str, bytes, str | None, str, str | None]]:
    """Requests and the answers this test gives as the FPRs: (topic, key, bytes, kind, request, source).
    One in ten requests is good, with answers from some sources (some sent twice, at least once), maybe
    an answer about another member; each bad request comes with a bad answer."""
    out = []
    rng = random.Random(draw(st.integers(0, 2**32)))
    for _ in range(BATCH):
        rid = uuid.uuid4().hex
        good = {
            "request_id": rid,
            "member_id": rng.choice(["m1", "m7", "m42", f"nobody-{rng.randrange(10**6)}"]),
            "requested_at": time.time(),
            "feed_size": rng.randint(1, 50),
        }
        if draw(st.integers(0, 9)) == 0:
            raw = json.dumps(good).encode()
            out.append((Topic.FEED_REQUESTS, rid, raw, None, rid, None))
            if draw(st.integers(0, 3)) == 0:
                out.append((Topic.FEED_REQUESTS, rid, raw, "duplicate", rid, None))
            sources = draw(st.lists(st.sampled_from(SOURCES), unique=True, max_size=4))
            for source in sources:
                ans = json.dumps(answer(rng, rid, good["member_id"], source)).encode()
                for _ in range(draw(st.integers(1, 2))):
                    out.append((Topic.FPR_CANDIDATES, rid, ans, None, rid, source))
            others = [x for x in SOURCES if x not in sources]
            if others and draw(st.integers(0, 3)) == 0:
                stray = answer(rng, rid, f"other-{good['member_id']}", draw(st.sampled_from(others)))
                out.append((Topic.FPR_CANDIDATES, rid, json.dumps(stray).encode(), "stranger", rid, None))
            continue
        required = ("request_id", "member_id", "requested_at")
        kind, raw = spoil(draw, good, required, "requested_at", 4096)
        out.append((Topic.FEED_REQUESTS, rid, raw, kind, rid, None))
        a = answer(rng, rid, "m1", draw(st.sampled_from(SOURCES)))
        kind = draw(st.sampled_from(ANSWER_SPOILS))
        if kind == "spoiled":
            required = ("request_id", "member_id", "source", "generated_at")
            kind, raw = spoil(draw, a, required, "generated_at", 100_000)
            kind = "huge_answer" if kind == "huge" else kind  # refused for its unknown padding field, not its size
        else:
            if kind == "score":
                a["candidates"] = [a_candidate("j1", "job", draw(st.sampled_from([-0.1, 1.5, 1e9])))]
            elif kind == "unknown_source":
                a["source"] = f"rogue-{draw(ids)}"
            elif draw(st.integers(0, 40)) == 0:
                kind, a["candidates"] = "too_many", [a_candidate("j1", "job", 0.5)] * 2001
            raw = json.dumps(a).encode()
        out.append((Topic.FPR_CANDIDATES, rid, raw, kind, rid, None))
    return out


@pytest.fixture
def mixer_and_features(base_settings, generator, tmp_path):
    s = isolated_settings(base_settings, tmp_path, orphan_answer_ttl_s=3.0, features_metrics_port=0)
    train_missing_fprs(s, generator)
    train_spr(s, generator.events(), generator.describe())
    sup = Supervisor(s)
    try:
        sup.start("features")
        sup.start("mixer")
        yield s, sup
    finally:
        sup.stop_all()
        drop_topics(s)


def read_all(s, t: Topic, model, until, timeout_s: float = 120) -> list:
    """Every message of ``t`` in the namespace, parsed, once ``until(messages)`` holds (or the timeout)."""
    consumer = make_consumer(s, f"audit-{uuid.uuid4().hex}")
    assign_from_beginning(consumer, topic(s, t))
    got: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            got += [parse(model, m.value()) for m in consume_ready(consumer, 2000, 0.5) if m.error() is None]
            if until(got):
                time.sleep(2.0)  # anything more (a letter or feed sent twice) would arrive now
                got += [parse(model, m.value()) for m in consume_ready(consumer, 100_000, 1.0) if m.error() is None]
                break
    finally:
        consumer.close()
    return got


def test_hostile_messages_on_every_input_topic_are_dead_lettered_and_good_ones_processed(mixer_and_features):
    s, sup = mixer_and_features
    producer = make_producer(s)
    sent = Sent()
    names = {t: topic(s, t) for t in (Topic.MEMBER_EVENTS, Topic.FEED_REQUESTS, Topic.FPR_CANDIDATES)}

    def produce(t: Topic, raw: bytes, key: str, bad_kind: str | None) -> None:
        def report(err, msg) -> None:
            assert err is None, err
            if bad_kind is not None:
                sent.bad[(msg.topic(), msg.partition(), msg.offset())] = bad_kind

        if bad_kind is not None:
            sent.kinds[(t, bad_kind)] += 1
        while True:
            try:
                producer.produce(names[t], raw, key=key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)

    def explore(examples: int):
        return settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,  # the same messages every run
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )

    @explore(PER_TOPIC * 4 // 3 // BATCH + 20)  # a quarter of the events are good
    @given(member_events())
    def send_member_events(batch) -> None:
        for key, raw, kind in batch:
            produce(Topic.MEMBER_EVENTS, raw, key, kind)
            if kind is None:
                sent.good_events.append(parse(MemberEvent, raw))

    @explore(PER_TOPIC // BATCH + 40)
    @given(request_traffic())
    def send_requests(batch) -> None:
        for t, key, raw, kind, rid, source in batch:
            produce(t, raw, key, kind)
            if kind is None and t == Topic.FEED_REQUESTS:
                sent.requests[rid] = set()
            elif kind is None:
                sent.requests[rid].add(source)

    send_member_events()
    send_requests()
    assert producer.flush(60) == 0
    per_topic = Counter(t for t, _ in sent.kinds.elements())
    assert min(per_topic[t] for t in names) >= PER_TOPIC, per_topic
    assert len(sent.bad) == sum(sent.kinds.values())

    # Every bad message dead-lettered once, with a reason, at its own position.
    want = set(sent.bad)
    letters = read_all(
        s,
        Topic.DEAD_LETTERS,
        DeadLetter,
        lambda got: len({(d.source_topic, d.partition, d.offset) for d in got} & want) >= len(want),
        timeout_s=240,
    )
    at = Counter((d.source_topic, d.partition, d.offset) for d in letters)
    missing = want - set(at)
    assert not missing, (len(missing), [sent.bad[k] for k in list(missing)[:10]])
    assert set(at) == want, "a good message was dead-lettered"
    assert max(at.values()) == 1, "a message was dead-lettered twice"
    assert all(d.reason for d in letters)
    by_kind = {sent.bad[(d.source_topic, d.partition, d.offset)]: d.reason for d in letters}
    assert "duplicate event_id" in by_kind["duplicate"] or "duplicate request_id" in by_kind["duplicate"]
    assert "limit" in by_kind["huge"] and "future" in by_kind["future"] and "before 2000" in by_kind["negative"]
    assert "no feed request" in by_kind["orphan"] and "unknown source" in by_kind["unknown_source"]

    # Every good request: exactly one feed, naming the FPRs that answered (duplicate answers ignored).
    feeds = read_all(
        s, Topic.RANKED_FEEDS, RankedFeed, lambda got: len({f.request_id for f in got}) >= len(sent.requests)
    )
    count = Counter(f.request_id for f in feeds)
    assert set(count) == set(sent.requests) and max(count.values()) == 1
    for f in feeds:
        assert set(f.sources_answered) == sent.requests[f.request_id], f.request_id
        assert f.timed_out == bool(f.sources_missing) == (len(f.sources_answered) < len(SOURCES))
        assert all(i.source in f.sources_answered for i in f.items)

    # Every good event counted once: the online store equals a recomputation from the good events.
    assert wait_online_equals(s, recompute(sent.good_events), timeout_s=120) == []
    assert sup.dead() == {}

    # The FPR services read the same two topics (and skip what is bad): started now, each reads the
    # whole hostile backlog of events and requests, and none dies on it.
    fprs = [f"fpr-{name}" for name in SOURCES]
    for name in fprs:
        sup.start(name)
    deadline = time.monotonic() + 180
    probes = [LagProbe(s, f"{s.topic_prefix}{name}", Topic.FEED_REQUESTS) for name in fprs]
    try:
        while any(p.lag() > 0 for p in probes):
            assert not sup.dead(), sup.dead()
            assert time.monotonic() < deadline, [p.lag() for p in probes]
            time.sleep(1.0)
    finally:
        for p in probes:
            p.close()
    assert sup.dead() == {}
