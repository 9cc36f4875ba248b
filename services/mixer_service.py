"""The feed mixer: gather every FPR's answer (or stop at the deadline), score, re-rank, publish.

Requests and candidates are both keyed by ``request_id`` with equal partition counts, and one consumer
subscribes to both with the range assignor, so each worker sees all the messages of its requests: the
mixer scales out by starting more workers. It fails open: a missing FPR delays a feed by at most the
deadline and is named in the feed's ``sources_missing``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from features.families import derive
from feedrank.contracts import ContractError, FeedRequest, FprCandidates, RankedFeed, Topic, parse
from feedrank.settings import Settings
from rankers.mixer.mixer import assemble, candidate_frame
from rankers.mixer.spr import MODEL_COLUMNS, SecondPassRanker
from rankers.registry import load_config
from rankers.rules.base import RerankRule
from services.kafka_io import DeadLetterSink, ensure_topics, make_consumer, make_producer, topic
from services.model_store import ModelStore, load_spr

log = logging.getLogger(__name__)

ORPHAN_TTL_S = 60.0  # candidates whose request never arrives are dropped after this long


@dataclass
class Gather:
    first_seen: float
    request: FeedRequest | None = None
    deadline: float = float("inf")
    answers: dict[str, FprCandidates] = field(default_factory=dict)


class Mixer:
    """Scores gathered candidates; separate from the loop so it can be exercised without Kafka."""

    def __init__(self, model: SecondPassRanker, model_version: str, rules: list[RerankRule], reader) -> None:
        self.model = model
        self.model_version = model_version
        self.rules = rules
        self.reader = reader

    def feed(self, request: FeedRequest, answers: list[FprCandidates], expected: list[str]) -> RankedFeed:
        strays = [a.source for a in answers if a.member_id != request.member_id]
        if strays:
            log.warning("request %s: ignoring answers from %s for another member", request.request_id, strays)
            answers = [a for a in answers if a.member_id == request.member_id]
        cands = candidate_frame(answers)
        if len(cands):
            feats = self.reader.read(
                request.member_id, list(cands[["item_id", "item_type", "actor_id"]].itertuples(index=False))
            )
            stored = feats.drop(columns=["member_id", "item_id", "item_type", "actor_id"], errors="ignore")
            derived = derive(stored.reset_index(drop=True), request.requested_at)
            scores = self.model.predict_proba(derived.join(cands.reset_index(drop=True)))[:, 1]
        else:
            scores = []
        items, _ = assemble(request.member_id, request.feed_size, cands, scores, self.rules)
        answered = sorted(a.source for a in answers)
        return RankedFeed(
            request_id=request.request_id,
            member_id=request.member_id,
            generated_at=time.time(),
            items=items,
            sources_answered=answered,
            sources_missing=sorted(set(expected) - set(answered)),
            model_version=self.model_version,
            timed_out=bool(set(expected) - set(answered)),
        )


class MixerService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pending: dict[str, Gather] = {}
        self.published = 0

    def _build_mixer(self) -> Mixer:
        from features.store import FastOnlineReader, feature_store

        config = load_config(self.settings.pipeline_config)
        self.expected = config.fpr_names
        artifact = load_spr(ModelStore(self.settings.model_dir), MODEL_COLUMNS)
        return Mixer(
            artifact.model,
            f"spr/{artifact.version}",
            config.build_rules(),
            FastOnlineReader(feature_store(self.settings), self.settings),
        )

    def _on_request(self, req: FeedRequest, now: float) -> None:
        g = self.pending.setdefault(req.request_id, Gather(first_seen=now))
        g.request = req
        g.deadline = now + self.settings.gather_deadline_ms / 1000

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
        mixer = self._build_mixer()
        producer = make_producer(s)
        dead = DeadLetterSink(s, producer, "mixer")
        consumer = make_consumer(s, "mixer")
        req_topic, cand_topic = topic(s, Topic.FEED_REQUESTS), topic(s, Topic.FPR_CANDIDATES)
        consumer.subscribe([req_topic, cand_topic])
        out_topic = topic(s, Topic.RANKED_FEEDS)
        log.info(
            "mixer serving: model %s, FPRs %s, deadline %d ms", mixer.model_version, self.expected, s.gather_deadline_ms
        )
        try:
            while not stop.is_set():
                msgs = consumer.consume(num_messages=200, timeout=0.01)
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
                for g in self._ready(time.monotonic()):
                    assert g.request is not None
                    try:
                        feed = mixer.feed(g.request, list(g.answers.values()), self.expected)
                    except Exception as err:
                        log.exception("mixing request %s failed", g.request.request_id)
                        dead.send(None, f"mixing failed: {err}", source_topic=req_topic, payload=g.request.to_bytes())
                        continue
                    producer.produce(out_topic, feed.to_bytes(), key=feed.member_id)
                    self.published += 1
                producer.poll(0)
                if msgs:
                    consumer.commit(asynchronous=True)
        finally:
            producer.flush(10)
            consumer.close()
