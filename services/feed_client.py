"""Ask for one member's feed and wait for it on ``ranked-feeds`` (what ``feedrank feed`` does)."""

from __future__ import annotations

import time
import uuid

from feedrank.contracts import ContractError, FeedRequest, RankedFeed, Topic, parse
from feedrank.settings import Settings
from services.kafka_io import REQUEST_PATH, consume_ready, make_consumer, make_producer, topic
from services.runtime import assign_at_end


class FeedTimeout(TimeoutError):
    """No feed came back for the request in time: is the mixer running?"""


class FeedClient:
    """Reads ``ranked-feeds`` from its end at creation time, so only answers to new requests are seen."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer = make_producer(settings, **REQUEST_PATH)
        self._consumer = make_consumer(settings, f"feed-client-{uuid.uuid4().hex}")
        assign_at_end(self._consumer, topic(settings, Topic.RANKED_FEEDS))
        self._waiting: dict[str, RankedFeed | None] = {}

    def request(self, member_id: str, feed_size: int | None = None) -> FeedRequest:
        req = FeedRequest.new(member_id, feed_size or self.settings.feed_size)
        self._producer.produce(topic(self.settings, Topic.FEED_REQUESTS), req.to_bytes(), key=req.request_id)
        self._producer.flush(10)
        self._waiting[req.request_id] = None
        return req

    def wait(self, request_id: str, timeout_s: float = 15.0) -> RankedFeed:
        deadline = time.monotonic() + timeout_s
        while self._waiting.get(request_id) is None:
            if time.monotonic() > deadline:
                raise FeedTimeout(f"no feed for request {request_id} within {timeout_s:.0f}s")
            for m in consume_ready(self._consumer, 100, 0.1):
                if m.error():
                    continue
                try:
                    feed = parse(RankedFeed, m.value())
                except ContractError:
                    continue
                if feed.request_id in self._waiting:
                    self._waiting[feed.request_id] = feed
        feed = self._waiting.pop(request_id)
        assert feed is not None
        return feed

    def feed(self, member_id: str, feed_size: int | None = None, timeout_s: float = 15.0) -> RankedFeed:
        return self.wait(self.request(member_id, feed_size).request_id, timeout_s)

    def close(self) -> None:
        self._consumer.close()
