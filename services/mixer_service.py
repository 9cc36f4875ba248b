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
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import KafkaException, TopicPartition
from redis import RedisError

from feedrank.contracts import ContractError, FeedItem, FeedRequest, FprCandidates, RankedFeed, Topic, parse
from feedrank.settings import Settings
from rankers.inventory import Inventory
from rankers.mixer.mixer import FeedMixer, MixResult, candidate_columns
from rankers.mixer.spr import SCHEMA
from rankers.registry import ConfigError, load_config
from services.feed_state import ExplanationStore, ServedStore
from services.impression_log import ImpressionJoiner, ImpressionLogWriter
from services.inventory_follower import InventoryFollower
from services.kafka_io import (
    REQUEST_PATH,
    STORED_OFFSETS,
    DeadLetterSink,
    MessageKey,
    OffsetLedger,
    consume_ready,
    ensure_topics,
    make_consumer,
    make_producer,
    topic,
)
from services.model_store import ModelStore, load_spr
from services.runtime import freeze_heap

log = logging.getLogger(__name__)

LOG_FLUSH_S = 2.0  # how often finished impression-log rows are written
# A request read from a backlog (a restarted or lagging worker) waits past its deadline until the worker
# has read the answers already in Kafka when it read the request, but no longer than this.
CATCH_UP_LIMIT_S = 10.0
REDIS_PAUSE_S = 1.0  # after Redis fails a feed, the next feeds skip it this long (then try again)


@dataclass
class Gather:
    first_seen: float
    request: FeedRequest | None = None
    deadline: float = float("inf")
    answers: dict[str, FprCandidates] = field(default_factory=dict)
    request_at: MessageKey | None = None  # where the request was read
    answered_at: dict[str, MessageKey] = field(default_factory=dict)  # where each answer was read
    catch_up: tuple[int, int] | None = None  # (partition, end of its answers when the request was read)

    @property
    def messages(self) -> list[MessageKey]:
        """What the feed answers, to be committed once it is published (stray answers included)."""
        held = list(self.answered_at.values())
        return held if self.request_at is None else [self.request_at, *held]


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
        self.redis_down_until = float("-inf")
        self.degraded = 0  # feeds scored without Redis

    def _redis_up(self) -> bool:
        return time.monotonic() >= self.redis_down_until

    def _redis_failed(self, err: Exception) -> None:
        if self._redis_up():
            log.warning("Redis unavailable (%s): feeds go out without online features for %.1f s", err, REDIS_PAUSE_S)
        self.redis_down_until = time.monotonic() + REDIS_PAUSE_S

    def _read_state(self, request: FeedRequest, keys: list[tuple[str, str, str]]) -> tuple[dict, dict, bool]:
        """The candidates' online features and the member's served history, or none of either (and
        True) while Redis is down: a feed without features still beats no feed."""
        if not self._redis_up():
            return {}, {}, True
        try:
            stored = self.reader.read_columns(request.member_id, keys) if keys else {}
            recent = self.served.recent(request.member_id, request.requested_at) if self.served is not None else {}
            return stored, recent, False
        except RedisError as err:
            self._redis_failed(err)
            return {}, {}, True

    def feed(
        self, request: FeedRequest, answers: list[FprCandidates], expected: list[str]
    ) -> tuple[RankedFeed, dict[str, Any]]:
        """The feed (its ``gather_ms`` is the caller's to set) and its explanation."""
        strays = [a.source for a in answers if a.member_id != request.member_id]
        if strays:
            log.warning("request %s: ignoring answers from %s for another member", request.request_id, strays)
            answers = [a for a in answers if a.member_id == request.member_id]
        now = request.requested_at
        cands = candidate_columns(
            ((a.source, a.candidates) for a in answers), now, {a.source: a.new_items_after for a in answers}
        )
        keys = list(
            zip(cands["item_id"].tolist(), cands["item_type"].tolist(), cands["actor_id"].tolist(), strict=True)
        )
        stored, recent, degraded = self._read_state(request, keys)
        self.degraded += degraded
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
            degraded=degraded,
        )
        return feed, explanation(feed, result, cands, self.worker)

    def remember(self, request: FeedRequest, feed: RankedFeed, doc: dict[str, Any]) -> None:
        """Before the feed is published: what it served (for the served rule of the member's next
        requests, whichever worker mixes them) and its explanation, in one Redis round trip."""
        if self.redis is None or not self._redis_up():
            return
        pipe = self.redis.pipeline(transaction=False)
        if self.served is not None:
            self.served.record(request.member_id, [i.item_id for i in feed.items], request.requested_at, pipe)
        if self.explanations is not None:
            self.explanations.save(request.request_id, doc, pipe)
        try:
            pipe.execute()
        except RedisError as err:  # the feed still goes out; its served history and explanation do not
            self._redis_failed(err)


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
        "degraded": feed.degraded,
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
        self.ledger = OffsetLedger()
        self.finished: OrderedDict[str, float] = OrderedDict()  # request_id -> when it was published
        self.published = 0
        self.late_answers = 0
        self.answers_read: dict[int, int] = {}  # fpr-candidates partition -> next offset this worker reads
        self._mix_ms: deque[float] = deque(maxlen=500)  # recent times from ready to published
        self._reserve, self._reserve_at = 0.0, float("-inf")

    def _build_mixer(self, catalog: Inventory, redis: Any) -> Mixer:
        from features.store import FastOnlineReader, feature_store

        config = load_config(self.settings.pipeline_config)
        self.expected = config.fpr_names
        artifact = load_spr(ModelStore(self.settings.model_dir), SCHEMA)
        return Mixer(
            FeedMixer(artifact.model, config.build_rules()),
            f"spr/{artifact.version}",
            FastOnlineReader(feature_store(self.settings), self.settings, fail_fast=True),
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

    def _on_request(
        self, req: FeedRequest, now: float, key: MessageKey, catch_up: tuple[int, int] | None = None
    ) -> str | None:
        """Start gathering ``req``; the reason it is refused (a dead letter), if it is."""
        rid = req.request_id
        if rid in self.finished:
            return f"duplicate request_id {rid}: its feed was already published"
        g = self.pending.setdefault(rid, Gather(first_seen=now))
        if g.request is not None:
            return f"duplicate request_id {rid}: already being gathered"
        g.request = req
        g.first_seen = now
        g.deadline = now + (self.settings.gather_deadline_ms - self.reserve_ms()) / 1000
        g.catch_up = catch_up
        g.request_at = key
        return None

    def _on_candidates(self, ans: FprCandidates, now: float, key: MessageKey) -> bool:
        """Hold ``ans`` for its request; False if it comes too late (the feed is out) or twice (an FPR
        that restarted answers again what it had not committed): nothing to hold, done with at once."""
        if ans.request_id in self.finished:
            self.late_answers += 1
            return False
        g = self.pending.setdefault(ans.request_id, Gather(first_seen=now))
        if ans.source in g.answers:
            self.late_answers += 1
            return False
        g.answers[ans.source] = ans
        g.answered_at[ans.source] = key
        return True

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        """Partitions given to another worker: it re-reads their uncommitted requests, so this one drops
        what it was gathering from them rather than publish those feeds twice."""
        self.ledger.forget(partitions)
        gone = {tp.partition for tp in partitions}
        for p in gone:
            self.answers_read.pop(p, None)
        for rid, g in list(self.pending.items()):
            if any(p in gone for _, p, _ in g.messages):
                del self.pending[rid]

    def _delivered(self, messages: list[MessageKey]) -> Any:
        """A delivery report: once Kafka has the feed (or dead letter), the messages it answers may be
        committed. One Kafka refused (after librdkafka's retries) leaves them uncommitted: a restart reads
        them again."""

        def report(err: Any, _msg: Any) -> None:
            if err is None:
                self.ledger.finish(messages)
            else:
                log.error("output not delivered (%s); its input stays uncommitted", err)

        return report

    def _ready(self, now: float) -> tuple[list[Gather], list[Gather]]:
        """Requests ready to mix, and orphans: answers whose request never came (to dead-letter)."""
        done, orphans = [], []
        for rid, g in list(self.pending.items()):
            if g.request is not None and (
                set(self.expected) <= set(g.answers) or (now >= g.deadline and self._caught_up(g, now))
            ):
                done.append(self.pending.pop(rid))
            elif g.request is None and now - g.first_seen > self.settings.orphan_answer_ttl_s:
                orphans.append(self.pending.pop(rid))
        return done, orphans

    @staticmethod
    def _drop_strays(g: Gather, dead: DeadLetterSink, cand_topic: str) -> None:
        """Answers about another member than the request's are never mixed: dead-lettered instead."""
        assert g.request is not None
        for source, ans in list(g.answers.items()):
            if ans.member_id != g.request.member_id:
                why = (
                    f"answer from {source} is for {ans.member_id}; request {ans.request_id} is {g.request.member_id}'s"
                )
                dead.send(None, why, source_topic=cand_topic, payload=ans.to_bytes(), at=g.answered_at[source])
                del g.answers[source]

    def _caught_up(self, g: Gather, now: float) -> bool:
        """Whether every answer in Kafka when the request was read has been read: in a backlog, a
        request's answers can come many fetches after it (they are larger), and publishing at the
        deadline would drop answers that were there all along."""
        if g.catch_up is None or now >= g.deadline + CATCH_UP_LIMIT_S:
            return True
        partition, end = g.catch_up
        return self.answers_read.get(partition, end) >= end

    def _answers_end(self, consumer: Any, cand_topic: str, partition: int) -> tuple[int, int] | None:
        """Where the answers of ``partition`` end now: librdkafka's cached high watermark (no round
        trip), asked of the broker only before the first fetch of the partition."""
        tp = TopicPartition(cand_topic, partition)
        try:
            end = consumer.get_watermark_offsets(tp, cached=True)
            if end is None or end[1] < 0:
                end = consumer.get_watermark_offsets(tp, timeout=1.0)
        except KafkaException:
            return None
        return None if end is None or end[1] < 0 else (partition, end[1])

    def _on_assign(self, consumer: Any, partitions: list[Any], cand_topic: str) -> None:
        """Where this worker starts reading each answers partition: the group's committed offset, or the
        partition's start when nothing was committed."""
        mine = [TopicPartition(cand_topic, tp.partition) for tp in partitions if tp.topic == cand_topic]
        try:
            for tp in consumer.committed(mine, timeout=10) if mine else []:
                start = tp.offset if tp.offset >= 0 else consumer.get_watermark_offsets(tp, timeout=5)[0]
                self.answers_read[tp.partition] = start
        except KafkaException as err:  # requests then simply wait their deadline, as without a backlog
            log.warning("could not read the committed answer offsets (%s)", err)

    def _finish(self, rid: str, now: float) -> None:
        """Done with a request: later answers to it are dropped."""
        self.finished[rid] = now
        self.finished.move_to_end(rid)
        horizon = now - self.settings.orphan_answer_ttl_s
        while self.finished and next(iter(self.finished.values())) < horizon:
            self.finished.popitem(last=False)

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        ensure_topics(s)
        catalog = Inventory()
        joiner = ImpressionJoiner(s.impression_window_s)
        writer = ImpressionLogWriter(s.impression_dir, self.worker.replace(":", "-"))
        follower = InventoryFollower(s, f"mixer-inventory-{self.worker}", catalog, on_event=joiner.observe)
        mixer = self._build_mixer(catalog, s.redis_client(fail_fast=True))
        producer = make_producer(s, **REQUEST_PATH)
        dead = DeadLetterSink(s, producer, "mixer")
        consumer = make_consumer(s, "mixer", **STORED_OFFSETS)
        req_topic, cand_topic = topic(s, Topic.FEED_REQUESTS), topic(s, Topic.FPR_CANDIDATES)
        check_co_partitioned(consumer, [req_topic, cand_topic])
        replayed = follower.start(stop)
        frozen = freeze_heap()
        consumer.subscribe(
            [req_topic, cand_topic],
            on_assign=lambda c, parts: self._on_assign(c, parts, cand_topic),
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
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
                    key = self.ledger.read(m)
                    held = False
                    try:
                        if m.topic() == req_topic:
                            end = self._answers_end(consumer, cand_topic, m.partition())
                            refused = self._on_request(parse(FeedRequest, m.value()), now, key, end)
                            if refused is not None:
                                raise ContractError(refused)
                            held = True
                        else:
                            self.answers_read[m.partition()] = m.offset() + 1
                            ans = parse(FprCandidates, m.value())
                            if ans.source not in self.expected:
                                raise ContractError(
                                    f"unknown source {ans.source!r}; configured FPRs: {', '.join(self.expected)}"
                                )
                            held = self._on_candidates(ans, now, key)
                    except ContractError as err:
                        dead.send(m, str(err), on_delivery=self._delivered([key]))
                        continue
                    if not held:
                        self.ledger.finish([key])
                ready, orphans = self._ready(time.monotonic())
                for g in orphans:
                    for source, ans in g.answers.items():
                        why = f"no feed request {ans.request_id} within {s.orphan_answer_ttl_s:g} s of this answer"
                        at = g.answered_at[source]
                        dead.send(
                            None,
                            why,
                            source_topic=cand_topic,
                            payload=ans.to_bytes(),
                            at=at,
                            on_delivery=self._delivered([at]),
                        )
                for g in sorted(ready, key=lambda g: g.deadline):
                    assert g.request is not None
                    self._drop_strays(g, dead, cand_topic)
                    started = time.monotonic()
                    try:
                        feed, doc = mixer.feed(g.request, list(g.answers.values()), self.expected)
                    except Exception as err:
                        log.exception("mixing request %s failed", g.request.request_id)
                        dead.send(
                            None,
                            f"mixing failed: {err}",
                            source_topic=req_topic,
                            payload=g.request.to_bytes(),
                            on_delivery=self._delivered(g.messages),
                        )
                        self._finish(g.request.request_id, started)
                        continue
                    doc["gather_ms"] = round((time.monotonic() - g.first_seen) * 1000, 3)
                    mixer.remember(g.request, feed, doc)
                    done = time.monotonic()
                    timing = {
                        "gather_ms": round((done - g.first_seen) * 1000, 3),
                        "mix_ms": round((done - started) * 1000, 3),
                    }
                    feed = feed.model_copy(update=timing)
                    producer.produce(
                        out_topic, feed.to_bytes(), key=feed.member_id, on_delivery=self._delivered(g.messages)
                    )
                    self.published += 1
                    self._finish(g.request.request_id, done)
                    self._mix_ms.append(timing["mix_ms"])
                    joiner.served(feed, g.request.requested_at, time.monotonic())
                producer.poll(0)  # delivery reports: a request's messages finish when its feed is acknowledged
                self.ledger.store(consumer)
                if time.monotonic() - last_flush > LOG_FLUSH_S:
                    writer.write(joiner.due(time.monotonic()))
                    last_flush = time.monotonic()
        finally:
            producer.flush(10)
            self.ledger.store(consumer)  # what the flush delivered; close commits it
            consumer.close()
            follower.close()
            writer.write(joiner.flush())
            log.info(
                "mixer %s stopped: %d feeds (%d without Redis), %d late or repeated answers ignored, "
                "%d impression rows logged",
                self.worker,
                self.published,
                mixer.degraded,
                self.late_answers,
                writer.rows_written,
            )
