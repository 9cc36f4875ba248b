"""Key housekeeping on the shared Redis, kept free of Feast so light commands can import it."""

from __future__ import annotations

import redis


def unlink_matching(client: redis.Redis, pattern: str) -> int:
    """UNLINK every key matching the glob ``pattern``, in batches of 10,000; returns how many."""
    batch: list[bytes] = []
    dropped = 0
    for key in client.scan_iter(match=pattern.encode(), count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            dropped += client.unlink(*batch)
            batch = []
    if batch:
        dropped += client.unlink(*batch)
    return dropped
