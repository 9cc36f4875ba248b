"""The live system as the logging policy: simulated members get their feeds from the running pipeline.

Each simulated request becomes a real ``feed-requests`` message. The member sees the top slate of the
mixer's feed in the mixer's order, and the log carries the mixer's request id and the exact
propensity the mixer computed (its exploration rule is the only randomness). Members act by the
ground truth and their events, tagged with the feed's request id, go back to ``member-events``, so
features, inventories and the mixer's impression log see the consequences: a closed loop.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from feedrank.contracts import MAX_FEED_SIZE, RankedFeed
from feedrank.settings import Settings
from services.feed_client import FeedClient
from simulator.config import SessionConfig
from simulator.session import Simulation
from simulator.truth import GroundTruth
from simulator.world import SOURCE_NAMES, World


class LiveSimulation(Simulation):
    def __init__(
        self,
        world: World,
        config: SessionConfig,
        settings: Settings,
        feed_size: int | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        if config.policy != "live":
            raise ValueError(f"LiveSimulation runs policy 'live', got {config.policy!r}")
        super().__init__(world, config, GroundTruth(world), scorer=lambda m, i, t: np.zeros(len(i)))
        self.settings = settings
        self.feed_size = feed_size or min(MAX_FEED_SIZE, 2 * config.slate_size)
        self.timeout_s = timeout_s
        self.client = FeedClient(settings)
        self._index = {name: i for i, name in enumerate(self.names.item.to_pylist())}
        self._source_index = {name: i for i, name in enumerate(SOURCE_NAMES)}
        self._rank_scores = np.zeros((0, 0))
        self._pctr = np.zeros((0, 0))
        self._propensity = np.zeros((0, 0))
        self._request_ids: list[str] = []
        self.policy = _FeedOrder(self)
        self.feeds: list[RankedFeed] = []
        self.unknown_items = 0

    def candidates(
        self, member: np.ndarray, t: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        names = self.names.member.take(member).to_pylist()
        requests = [self.client.request(name, self.feed_size) for name in names]
        feeds = [self.client.wait(r.request_id, self.timeout_s) for r in requests]
        self.feeds.extend(feeds)
        b, f = len(member), self.feed_size
        items = np.full((b, f), -1, dtype=np.int64)
        source = np.zeros((b, f), dtype=np.int8)
        pctr = np.zeros((b, f))
        propensity = np.ones((b, f))
        self._request_ids = [feed.request_id for feed in feeds]
        for row, feed in enumerate(feeds):
            for it in feed.items[:f]:
                gid = self._index.get(it.item_id)
                if gid is None:  # not of this world (e.g. left over from another run on the same topics)
                    self.unknown_items += 1
                    continue
                items[row, it.position] = gid
                source[row, it.position] = self._source_index.get(it.source, 0)
                pctr[row, it.position] = it.score
                propensity[row, it.position] = it.propensity
        # The system's order is the ranking: the earlier the position, the higher the score.
        self._rank_scores = np.where(items >= 0, -np.arange(f, dtype=float)[None, :], -np.inf)
        self._pctr = pctr
        self._propensity = propensity
        return items, source, items >= 0

    def rank(self, member: np.ndarray, items: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self._rank_scores

    def predicted(
        self, rows: np.ndarray, cols: np.ndarray, scores: np.ndarray | None, position: np.ndarray
    ) -> np.ndarray:
        return self._pctr[rows, cols]  # the mixer's pCTR of the item it served, at the position it served it

    def request_names(self, first_request: int, rows: np.ndarray) -> pa.Array:
        return pa.array(self._request_ids, pa.string()).take(pa.array(rows))

    def close(self) -> None:
        self.client.close()


class _FeedOrder:
    """Shows the feed's first slots in the mixer's order, with the mixer's propensities."""

    name = "live"

    def __init__(self, sim: LiveSimulation) -> None:
        self.sim = sim

    def choose(
        self, scores: np.ndarray | None, valid: np.ndarray, slate_size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        slate = np.where(valid[:, :slate_size], np.arange(min(slate_size, valid.shape[1]))[None, :], -1)
        prop = np.where(slate >= 0, self.sim._propensity[:, : slate.shape[1]], 0.0)
        return slate, prop


def wait_for_pipeline(settings: Settings, sim: LiveSimulation, timeout_s: float = 300.0) -> None:
    """Before the first live request: every FPR answers, and the feature service has read every event."""
    import time

    from feedrank.contracts import Topic
    from services.demo import wait_until_serving
    from services.kafka_io import LagProbe
    from services.supervisor import pipeline_services

    expected = {n.removeprefix("fpr-") for n in pipeline_services(settings) if n.startswith("fpr-")}
    wait_until_serving(sim.client, sim.names.member[0].as_py(), expected, timeout_s)
    deadline = time.monotonic() + timeout_s
    with LagProbe(settings, settings.features_app_id, Topic.MEMBER_EVENTS) as probe:
        while probe.lag() > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the feature service did not catch up on member-events within {timeout_s:.0f}s")
            time.sleep(0.5)
