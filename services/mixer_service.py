"""The feed mixer: gather every FPR's answer (or stop at the deadline), score, re-rank, publish.

Requests and candidates are both keyed by ``request_id``, produced with the same partitioner into
topics with equal partition counts, and every worker subscribes to both with the range assignor, so
a worker gets the same partitions of both topics and sees every message of its requests: the mixer
scales out by starting more workers (``FEEDRANK_MIXER_WORKERS``). It fails open: a missing FPR
delays a feed by at most the deadline and is named in the feed's ``sources_missing``.

Each worker also follows ``member-events`` into its own inventory (the graph and the items'
creation facts, for visibility, blocks and freshness), shares the members' served history and the
requests' explanations through Redis, and writes the impression log.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from feedrank.contracts import ContractError, FeedItem, FeedRequest, FprCandidates, RankedFeed, Topic, parse
from feedrank.settings import Settings
from rankers.inventory import Inventory
from rankers.mixer.mixer import FeedMixer, MixResult, candidate_columns
from rankers.mixer.spr import BASE_COLUMNS
from rankers.registry import ConfigError, load_config
from services.feed_state import ExplanationStore, ServedStore
from services.impression_log import ImpressionJoiner, ImpressionLogWriter
from services.inventory_follower import InventoryFollower
from services.kafka_io import (
    REQUEST_PATH,
    STORED_OFFSETS,
    DeadLetterSink,
    consume_ready,
    ensure_topics,
    make_consumer,
    make_producer,
    store_processed,
    topic,
)
from services.model_store import ModelStore, load_spr
from services.runtime import freeze_heap

log = logging.getLogger(__name__)

ORPHAN_TTL_S = 60.0  # candidates whose request never arrives are dropped after this long
LOG_FLUSH_S = 2.0  # how often finished impression-log rows are written


@dataclass
class Gather:
    first_seen: float
    request: FeedRequest | None = None
    deadline: float = float("inf")
    answers: dict[str, FprCandidates] = field(default_factory=dict)


class Mixer:
    """One worker's feed assembly around the pure ``FeedMixer``: reads features and served history,
    mixes, and builds the feed message and its explanation."""

    def __init__(
        self,
        feed_mixer: FeedMixer,
        model_version: str,
        reader: Any,
        catalog: Inventory,
        redis: Any = None,
        served: ServedStore | None = None,
        explanations: ExplanationStore | None = None,
        worker: str = "",
    ) -> None:
        self.feed_mixer = feed_mixer
        self.model_version = model_version
        self.reader = reader
        self.catalog = catalog
        self.redis = redis  # the client behind ``served`` and ``explanations``
        self.served = served
        self.explanations = explanations
        self.worker = worker

    def feed(
        self, request: FeedRequest, answers: list[FprCandidates], expected: list[str]
    ) -> tuple[RankedFeed, dict[str, Any]]:
        """The feed (its ``gather_ms`` is the caller's to set) and its explanation."""
        strays = [a.source for a in answers if a.member_id != request.member_id]
        if strays:
            log.warning("request %s: ignoring answers from %s for another member", request.request_id, strays)
            answers = [a for a in answers if a.member_id == request.member_id]
        now = request.requested_at
        cands = candidate_columns((a.source, a.candidates) for a in answers)
        keys = list(
            zip(cands["item_id"].tolist(), cands["item_type"].tolist(), cands["actor_id"].tolist(), strict=True)
        )
        stored = self.reader.read_columns(request.member_id, keys) if keys else {}
        recent = self.served.recent(request.member_id, now) if self.served is not None else {}
        answered = sorted(a.source for a in answers)
        result = self.feed_mixer.mix(
            request.request_id,
            request.member_id,
            request.feed_size,
            now,
            cands,
            stored,
            self.catalog,
            recent,
        )
        items = [
            FeedItem(
                item_id=s.item_id,
                item_type=s.item_type,
                actor_id=s.actor_id,
                source=s.source,
                score=float(min(1.0, max(0.0, p))),
                position=i,
                propensity=float(min(1.0, max(s.propensity, 1e-12))),
            )
            for i, (s, p) in enumerate(zip(result.slots, result.pctr, strict=True))
        ]
        missing = sorted(set(expected) - set(answered))
        feed = RankedFeed(
            request_id=request.request_id,
            member_id=request.member_id,
            generated_at=time.time(),
            items=items,
            sources_answered=answered,
            sources_missing=missing,
            model_version=self.model_version,
            model_versions={"spr": self.model_version, **{a.source: a.model_version for a in answers}},
            timed_out=bool(missing),
        )
        return feed, explanation(feed, result, cands, self.worker)

    def remember(self, request: FeedRequest, feed: RankedFeed, doc: dict[str, Any]) -> None:
        """Before the feed is published: what it served (for the served rule of the member's next
        requests, whichever worker mixes them) and its explanation, in one Redis round trip."""
        if self.redis is None:
            return
        pipe = self.redis.pipeline(transaction=False)
        if self.served is not None:
            self.served.record(request.member_id, [i.item_id for i in feed.items], request.requested_at, pipe)
        if self.explanations is not None:
            self.explanations.save(request.request_id, doc, pipe)
        pipe.execute()


def explanation(feed: RankedFeed, result: MixResult, cands: dict[str, Any], worker: str) -> dict[str, Any]:
    """What ``feedrank explain`` shows: per item, each family's share of the logit and the rules that
    moved it; per rule, the candidates it removed."""
    fpr_score = dict(zip(cands["item_id"].tolist(), cands["fpr_score"].tolist(), strict=True))
    dropped: dict[str, list[str]] = {}
    for item_id, rule in result.dropped.items():
        dropped.setdefault(rule, []).append(item_id)
    items = []
    for it, s, contrib in zip(feed.items, result.slots, result.contribution_rows(), strict=True):
        items.append(
            {
                "position": it.position,
                "item_id": it.item_id,
                "item_type": it.item_type.value,
                "source": it.source,
                "actor_id": it.actor_id,
                "fpr_score": float(fpr_score.get(it.item_id, 0.0)),
                "pctr_top": s.pctr,
                "rank_score": s.score,
                "score": it.score,
                "propensity": it.propensity,
                "contributions": {k: round(v, 5) for k, v in contrib.items()},
                "moved_by": list(s.moved_by),
            }
        )
    return {
        "request_id": feed.request_id,
        "member_id": feed.member_id,
        "worker": worker,
        "generated_at": feed.generated_at,
        "model_versions": feed.model_versions,
        "sources_answered": feed.sources_answered,
        "sources_missing": feed.sources_missing,
        "gather_ms": feed.gather_ms,
        "candidates": result.candidates,
        "items": items,
        "dropped": dropped,
    }


def check_co_partitioned(consumer: Any, names: list[str]) -> None:
    """Both topics must have the same partition count, or a request and its candidates could land on
    different workers."""
    md = consumer.list_topics(timeout=10)
    counts = {n: len(md.topics[n].partitions) for n in names}
    if len(set(counts.values())) != 1:
        raise ConfigError(f"feed-requests and fpr-candidates must have equal partition counts, got {counts}")


class MixerService:
    def __init__(self, settings: Settings, worker: str | None = None) -> None:
        self.settings = settings
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.pending: dict[str, Gather] = {}
        self.published = 0
        self._mix_ms: deque[float] = deque(maxlen=500)  # recent times from ready to published
        self._reserve, self._reserve_at = 0.0, float("-inf")

    def _build_mixer(self, catalog: Inventory, redis: Any) -> Mixer:
        from features.store import FastOnlineReader, feature_store

        config = load_config(self.settings.pipeline_config)
        self.expected = config.fpr_names
        artifact = load_spr(ModelStore(self.settings.model_dir), BASE_COLUMNS)
        return Mixer(
            FeedMixer(artifact.model, config.build_rules()),
            f"spr/{artifact.version}",
            FastOnlineReader(feature_store(self.settings), self.settings),
            catalog,
            redis,
            ServedStore(redis, self.settings),
            ExplanationStore(redis, self.settings),
            self.worker,
        )

    def reserve_ms(self) -> float:
        """How long before the deadline to stop gathering: the configured budget, or more when recent
        mixes ran slower (1.5 x their 99th percentile), but never more than half the deadline.
        Recomputed at most once a second (a percentile per request was 4% of the mixer's time)."""
        now = time.monotonic()
        if now - self._reserve_at >= 1.0:
            recent = 1.5 * float(np.percentile(self._mix_ms, 99)) if self._mix_ms else 0.0
            self._reserve = min(max(self.settings.mix_budget_ms, recent), self.settings.gather_deadline_ms / 2)
            self._reserve_at = now
        return self._reserve

    def _on_request(self, req: FeedRequest, now: float) -> None:
        g = self.pending.setdefault(req.request_id, Gather(first_seen=now))
        g.request = req
        g.first_seen = now
        g.deadline = now + (self.settings.gather_deadline_ms - self.reserve_ms()) / 1000

    def _on_candidates(self, ans: FprCandidates, now: float) -> None:
        g = self.pending.setdefault(ans.request_id, Gather(first_seen=now))
        g.answers[ans.source] = ans

    def _ready(self, now: float) -> list[Gather]:
        done = []
        for rid, g in list(self.pending.items()):
            if g.request is not None and (set(self.expected) <= set(g.answers) or now >= g.deadline):
                done.append(self.pending.pop(rid))
            elif g.request is None and now - g.first_seen > ORPHAN_TTL_S:
                log.warning("dropping candidates for unknown request %s", rid)
                del self.pending[rid]
        return done

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        ensure_topics(s)
        catalog = Inventory()
        joiner = ImpressionJoiner(s.impression_window_s)
        writer = ImpressionLogWriter(s.impression_dir, self.worker.replace(":", "-"))
        follower = InventoryFollower(s, f"mixer-inventory-{self.worker}", catalog, on_event=joiner.observe)
        mixer = self._build_mixer(catalog, s.redis_client())
        producer = make_producer(s, **REQUEST_PATH)
        dead = DeadLetterSink(s, producer, "mixer")
        consumer = make_consumer(s, "mixer", **STORED_OFFSETS)
        req_topic, cand_topic = topic(s, Topic.FEED_REQUESTS), topic(s, Topic.FPR_CANDIDATES)
        check_co_partitioned(consumer, [req_topic, cand_topic])
        replayed = follower.start(stop)
        frozen = freeze_heap()
        consumer.subscribe([req_topic, cand_topic])
        out_topic = topic(s, Topic.RANKED_FEEDS)
        log.info(
            "mixer %s serving: model %s, FPRs %s, deadline %d ms, after replaying %d events (%d objects frozen)",
            self.worker,
            mixer.model_version,
            self.expected,
            s.gather_deadline_ms,
            replayed,
            frozen,
        )
        last_flush = time.monotonic()
        try:
            while not stop.is_set():
                follower.poll()
                msgs = consume_ready(consumer, 200, 0.005)
                now = time.monotonic()
                for m in msgs:
                    if m.error():
                        continue
                    try:
                        if m.topic() == req_topic:
                            self._on_request(parse(FeedRequest, m.value()), now)
                        else:
                            ans = parse(FprCandidates, m.value())
                            if ans.source not in self.expected:
                                raise ContractError(
                                    f"unknown source {ans.source!r}; configured FPRs: {', '.join(self.expected)}"
                                )
                            self._on_candidates(ans, now)
                    except ContractError as err:
                        dead.send(m, str(err))
                for g in sorted(self._ready(time.monotonic()), key=lambda g: g.deadline):
                    assert g.request is not None
                    started = time.monotonic()
                    try:
                        feed, doc = mixer.feed(g.request, list(g.answers.values()), self.expected)
                    except Exception as err:
                        log.exception("mixing request %s failed", g.request.request_id)
                        dead.send(None, f"mixing failed: {err}", source_topic=req_topic, payload=g.request.to_bytes())
                        continue
                    doc["gather_ms"] = round((time.monotonic() - g.first_seen) * 1000, 3)
                    mixer.remember(g.request, feed, doc)
                    done = time.monotonic()
                    timing = {
                        "gather_ms": round((done - g.first_seen) * 1000, 3),
                        "mix_ms": round((done - started) * 1000, 3),
                    }
                    feed = feed.model_copy(update=timing)
                    producer.produce(out_topic, feed.to_bytes(), key=feed.member_id)
                    self.published += 1
                    self._mix_ms.append(timing["mix_ms"])
                    joiner.served(feed, g.request.requested_at, time.monotonic())
                producer.poll(0)
                store_processed(consumer, msgs)
                if time.monotonic() - last_flush > LOG_FLUSH_S:
                    writer.write(joiner.due(time.monotonic()))
                    last_flush = time.monotonic()
        finally:
            producer.flush(10)
            consumer.close()
            follower.close()
            writer.write(joiner.flush())
            log.info(
                "mixer %s stopped: %d feeds, %d impression rows logged",
                self.worker,
                self.published,
                writer.rows_written,
            )
