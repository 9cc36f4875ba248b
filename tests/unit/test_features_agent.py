"""The Faust agent, run with faust's test_context (no broker): counts, online rows and dead letters."""

import asyncio
import json
import time

import pytest

from features import app as feature_app
from features.batching import RecordBatch
from features.families import VIEW_BY_NAME, RowKey
from features.row_state import RowState


class RecordingSink:
    def __init__(self):
        self.batches = []
        self.offline_writes = 0

    def write_online(self, changed, watermark):
        self.batches.append((changed, watermark))
        return b"", len(changed)

    def send_online(self, payload, n, event_times):
        return n

    buffered = 1  # pretend rows wait for the offline write until it is forced

    def offline_due(self):
        return False

    def changelog_durable(self):
        pass

    def take_offline(self):
        return {"member_stats": [b.stored for b, _ in self.batches]}

    def write_offline(self, tables):
        self.offline_writes += 1
        return 0


class RecordingTopic:
    def __init__(self):
        self.sent = []

    async def send(self, key=None, value=None):
        self.sent.append((key, value))


def _event(kind, **kw):
    base = {
        "event_id": f"e{time.time_ns()}",
        "event_type": kind,
        "member_id": "m1",
        "timestamp": time.time(),
        "item_id": "p1",
        "item_type": "post",
        "item_actor_id": "m2",
    }
    base.update(kw)
    return json.dumps(base).encode()


@pytest.fixture
def agent_env(monkeypatch):
    sink, letters = RecordingSink(), RecordingTopic()
    monkeypatch.setattr(feature_app, "sink", sink)
    monkeypatch.setattr(feature_app, "dead_letters", letters)
    monkeypatch.setattr(feature_app, "state", RowState(8))
    feature_app.pending.unacked.clear()
    return sink, letters


def test_agent_counts_writes_rows_and_dead_letters(agent_env):
    sink, letters = agent_env

    async def scenario():
        async with feature_app.aggregate.test_context() as agent:
            await agent.put(RecordBatch.of("member-events", [_event("impression"), _event("click")]))
            await agent.put(RecordBatch.of("member-events", [b"{broken", _event("like", item_actor_id=None)], 0, 2))
            await feature_app.flush(force_offline=True)

    asyncio.run(scenario())
    assert feature_app.state.row(RowKey("member_actor", ("m1", "m2")).encode())["n"] == [1, 1, 0]
    assert sink.offline_writes == 1 and not feature_app.pending.unacked  # acked after both writes
    view = VIEW_BY_NAME["member_stats"]
    keys, values = sink.batches[-1][0].stored(view)
    got = dict(zip(view.stored, values[keys.index("member_stats|m1")], strict=True))
    assert got["imp_total"] == 1 and got["eng_total"] == 1 and got["imp_7d"] > 0.99
    letters = [json.loads(v) for _, v in letters.sent]
    assert [(d["partition"], d["offset"]) for d in letters] == [(0, 2), (0, 3)]
    assert "malformed JSON" in letters[0]["reason"] and "item_actor_id" in letters[1]["reason"]
