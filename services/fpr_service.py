"""One first-pass ranker as its own process.

It folds ``member-events`` into a private inventory (replayed from the beginning at start, so it is
rebuildable and owned by this team alone) and answers each ``feed-requests`` message, in its own
consumer group, with its top-k on ``fpr-candidates``. Invalid input is skipped here and dead-lettered by
the topic's owner (features for member-events, the mixer for feed-requests), so each bad message is
dead-lettered exactly once.
"""

from __future__ import annotations

import logging
import threading
import time

from feedrank.contracts import ContractError, FeedRequest, FprCandidates, Topic, parse
from feedrank.settings import Settings
from rankers.fpr import FirstPassRanker
from rankers.inventory import Inventory
from rankers.registry import FprSpec, load_config
from services.inventory_follower import InventoryFollower
from services.kafka_io import (
    REQUEST_PATH,
    STORED_OFFSETS,
    consume_ready,
    ensure_topics,
    make_consumer,
    make_producer,
    store_processed,
    topic,
)
from services.model_store import Artifact, ModelNotFound, ModelStore
from services.runtime import freeze_heap, limit_native_threads, setup_logging, stop_event

log = logging.getLogger(__name__)


class FprService:
    def __init__(self, settings: Settings, ranker: FirstPassRanker) -> None:
        self.settings = settings
        self.ranker = ranker
        self.inventory = Inventory()
        self.answered = 0
        self.skipped = 0  # invalid feed requests
        self.failed = 0

    def answer(self, request: FeedRequest, now: float | None = None) -> FprCandidates:
        now = time.time() if now is None else now
        cands = self.ranker.top_k(self.inventory, request.member_id, now, with_features=self.settings.fpr_send_features)
        return FprCandidates(
            request_id=request.request_id,
            member_id=request.member_id,
            source=self.ranker.name,
            model_version=self.ranker.model_version,
            generated_at=time.time(),
            candidates=cands,
            trained_until=self.ranker.trained_until,
            learns_items=self.ranker.learns_items,
        )

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        ensure_topics(s)
        follower = InventoryFollower(s, f"fpr-{self.ranker.name}-inventory", self.inventory)
        req_consumer = make_consumer(s, f"fpr-{self.ranker.name}", **STORED_OFFSETS)
        req_consumer.subscribe([topic(s, Topic.FEED_REQUESTS)])
        producer = make_producer(s, **REQUEST_PATH)
        out_topic = topic(s, Topic.FPR_CANDIDATES)
        replayed = follower.start(stop)
        frozen = freeze_heap()
        log.info(
            "fpr %s serving (model %s) after replaying %d events (%d objects frozen)",
            self.ranker.name,
            self.ranker.model_version,
            replayed,
            frozen,
        )
        try:
            while not stop.is_set():
                follower.poll()
                msgs = consume_ready(req_consumer, 100, 0.02)
                for m in msgs:
                    if m.error():
                        continue
                    try:
                        request = parse(FeedRequest, m.value())
                    except ContractError:
                        self.skipped += 1
                        continue
                    try:
                        answer = self.answer(request)
                    except Exception:
                        log.exception("fpr %s failed on request %s", self.ranker.name, request.request_id)
                        self.failed += 1
                        continue
                    producer.produce(out_topic, answer.to_bytes(), key=request.request_id)
                    self.answered += 1
                producer.poll(0)
                if msgs:
                    # answers delivered before their requests' offsets are stored for commit (at least once)
                    producer.flush(10)
                    store_processed(req_consumer, msgs)
        finally:
            producer.flush(10)
            req_consumer.close()
            follower.close()


def load_trained(settings: Settings, spec: FprSpec) -> Artifact | None:
    """The FPR's current trained artifact (``fpr-NAME/CURRENT``), or None (with a warning) if there is
    none or it was trained on other features than this code computes (a scorer with ``compatible()``
    says whether it fits)."""
    try:
        artifact = ModelStore(settings.model_dir).load(spec.artifact)
    except ModelNotFound:
        if spec.trainer is not None:
            log.warning(
                "no trained %s model yet: serving the baseline (train with `feedrank train fpr %s`)",
                spec.name,
                spec.name,
            )
        return None
    if not getattr(artifact.model, "compatible", lambda: True)():
        log.warning(
            "%s model %s was trained on other features than this code computes: serving the baseline "
            "(retrain with `feedrank train fpr %s`)",
            spec.name,
            artifact.version,
            spec.name,
        )
        return None
    return artifact


def load_ranker(settings: Settings, spec: FprSpec) -> FirstPassRanker:
    """The FPR around its current trained artifact; the baseline scorer if it has none it can serve.

    Serving the baseline keeps a new deployment answering before its first training run, or after an
    upgrade that changed the model's features; the model version in every answer (``NAME/popularity``
    etc.) says which one is serving.
    """
    artifact = load_trained(settings, spec)
    if artifact is None:
        return spec.build()
    scorer = artifact.model
    scorer.version = artifact.version
    return spec.build(model=scorer)


def build_service(settings: Settings, name: str) -> FprService:
    return FprService(settings, load_ranker(settings, load_config(settings.pipeline_config).fpr(name)))


def main(name: str) -> None:
    """A team's service entry (``python -m rankers.NAME``): the same process as ``feedrank serve fpr-NAME``."""
    from feedrank.settings import get_settings

    setup_logging(f"fpr-{name}")
    settings = get_settings()
    limit_native_threads(settings.service_threads)
    build_service(settings, name).run(stop_event())
