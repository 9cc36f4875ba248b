"""What the mixer workers share in Redis: what each member was served lately, and each request's explanation.

Requests are spread over workers by ``request_id``, so one member's consecutive feeds may come from
different workers: the served history must live outside them. Keys are namespaced by the Feast
project, like the features, so test sessions and the demo never see each other's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from redis.client import Pipeline

from feedrank.redis_keys import unlink_matching
from feedrank.settings import Settings


class ServedStore:
    """Per member, a sorted set of served item ids scored by when they were served (trimmed to a TTL)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._prefix = f"feedrank:{settings.feast_project}:served:"
        self.ttl_s = settings.served_ttl_s

    def recent(self, member_id: str, now: float) -> dict[str, float]:
        """Item id -> when it was last served, within the TTL."""
        pairs = self._r.zrangebyscore(self._prefix + member_id, now - self.ttl_s, "+inf", withscores=True)
        return {k.decode(): float(v) for k, v in pairs}

    def record(self, member_id: str, item_ids: Sequence[str], now: float, pipe: Pipeline) -> None:
        """Queue the served items on ``pipe`` (the caller executes it, with its other writes)."""
        if not item_ids:
            return
        key = self._prefix + member_id
        pipe.zadd(key, dict.fromkeys(item_ids, now))
        pipe.zremrangebyscore(key, "-inf", now - self.ttl_s)
        pipe.expire(key, int(self.ttl_s) + 1)


class ExplanationStore:
    """One JSON document per request, kept ``explain_ttl_s``: what ``feedrank explain`` prints."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._prefix = f"feedrank:{settings.feast_project}:explain:"
        self.ttl_s = settings.explain_ttl_s

    def save(self, request_id: str, doc: Mapping[str, Any], pipe: Pipeline) -> None:
        """Queue the explanation on ``pipe`` (the caller executes it, with its other writes)."""
        if self.ttl_s > 0:
            pipe.set(self._prefix + request_id, json.dumps(doc, separators=(",", ":")), ex=int(self.ttl_s))

    def load(self, request_id: str) -> dict[str, Any] | None:
        raw = self._r.get(self._prefix + request_id)
        return json.loads(raw) if raw is not None else None


def drop_feed_state(settings: Settings, project_glob: str) -> int:
    """Delete the served histories and explanations of the deployments whose Feast project matches
    ``project_glob``: a benchmark run leaves thousands of explanations (about 9 KB each) for a day
    otherwise, and a Redis grown to a gigabyte rewrote its append-only file mid-benchmark."""
    return unlink_matching(settings.redis_client(), f"feedrank:{project_glob}:*")
