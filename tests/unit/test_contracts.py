import json
import time

import pytest

from feedrank.contracts import (
    ContractError,
    FeedRequest,
    MemberEvent,
    RankedFeed,
    parse,
    parse_all,
    share_fields_set,
)

NOW = time.time()


def event(**kw):
    base = {
        "event_id": "e1",
        "event_type": "click",
        "member_id": "m1",
        "timestamp": NOW,
        "item_id": "p1",
        "item_type": "post",
        "item_actor_id": "m2",
    }
    base.update(kw)
    return json.dumps(base).encode()


def test_valid_event_round_trips():
    e = parse(MemberEvent, event())
    assert parse(MemberEvent, e.to_bytes()) == e


def test_events_given_the_same_fields_share_their_record_of_them_and_copies_do_not_change_it():
    a = share_fields_set(parse(MemberEvent, event()))
    b = share_fields_set(parse(MemberEvent, event(event_id="e2", item_id="p2")))
    assert a.model_fields_set is b.model_fields_set
    assert "attributes" not in a.model_fields_set  # not given: a default
    joined = share_fields_set(
        parse(
            MemberEvent,
            json.dumps({"event_id": "e3", "event_type": "member_joined", "member_id": "m3", "timestamp": NOW}).encode(),
        )
    )
    assert joined.model_fields_set == {"event_id", "event_type", "member_id", "timestamp"}
    c = a.model_copy(update={"attributes": {"source": "network"}})
    assert "attributes" in c.model_fields_set and "attributes" not in b.model_fields_set
    assert json.loads(b.model_dump_json(exclude_unset=True)).keys() == json.loads(event()).keys()


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b"\xff\xfe", "malformed JSON"),
        (None, "empty message"),
        (event(member_id=None), "member_id"),
        (event(event_type="teleport"), "event_type"),
        (event(timestamp="yesterday"), "timestamp"),
        (event(timestamp=-5), "before 2000"),
        (event(timestamp=NOW + 10 * 86400), "future"),
        (event(item_actor_id=None), "requires item_actor_id"),
        (event(event_type="job_posted", item_type="post"), "item_type=job"),
        (event(event_type="connection_made", item_id="m1", item_type="member"), "itself"),
        (event(bogus=1), "bogus"),
        (event(member_id="m 1; DROP"), "member_id"),
    ],
)
def test_invalid_events_name_the_problem(raw, needle):
    with pytest.raises(ContractError) as err:
        parse(MemberEvent, raw)
    assert needle in str(err.value)


def test_feed_request_bounds_feed_size():
    req = FeedRequest.new("m1", feed_size=10)
    assert parse(FeedRequest, req.to_bytes()).feed_size == 10
    with pytest.raises(ContractError, match="feed_size"):
        parse(FeedRequest, json.dumps({**req.model_dump(), "feed_size": 0}))


def test_ranked_feed_scores_are_probabilities():
    raw = {
        "request_id": "r",
        "member_id": "m1",
        "generated_at": NOW,
        "model_version": "v",
        "sources_answered": ["jobs"],
        "items": [
            {"item_id": "j1", "item_type": "job", "actor_id": "co1", "source": "jobs", "score": 1.5, "position": 0}
        ],
    }
    with pytest.raises(ContractError, match="score"):
        parse(RankedFeed, json.dumps(raw))


def test_parse_all_takes_a_good_batch_whole_and_refuses_one_with_a_bad_record():
    good = [event(), event(event_type="click")]
    parsed = parse_all(MemberEvent, good)
    assert parsed == [parse(MemberEvent, r) for r in good]
    for bad in (b"{broken", None, b"\xff\xfe", event(timestamp=-1)):
        assert parse_all(MemberEvent, [*good, bad]) is None


def test_oversized_messages_are_refused_by_size_before_parsing():
    huge = event(attributes={"blob": "x" * MemberEvent.MAX_BYTES})
    with pytest.raises(ContractError, match=r"over MemberEvent's limit of 65536"):
        parse(MemberEvent, huge)
    assert parse_all(MemberEvent, [event(), huge]) is None
    big_but_allowed = event(attributes={"blob": "x" * (MemberEvent.MAX_BYTES // 2)})
    assert parse(MemberEvent, big_but_allowed).attributes["blob"]
    request = json.dumps(
        {"request_id": "r1", "member_id": "m1", "requested_at": NOW, "pad": "y" * FeedRequest.MAX_BYTES}
    )
    with pytest.raises(ContractError, match="FeedRequest's limit"):
        parse(FeedRequest, request)
