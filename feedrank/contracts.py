"""The one definition of every topic and message that crosses a process boundary.

Messages are JSON on the wire and validated on the way in: a message that does not parse raises
:class:`ContractError` with a reason a human can act on, and the consumer dead-letters it.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class Topic(StrEnum):
    """Base topic names; the deployed name is ``settings.topic_prefix + name``."""

    MEMBER_EVENTS = "member-events"
    FEED_REQUESTS = "feed-requests"
    FPR_CANDIDATES = "fpr-candidates"
    RANKED_FEEDS = "ranked-feeds"
    DEAD_LETTERS = "dead-letters"


class ContractError(ValueError):
    """A message that breaks its topic's contract; ``str(err)`` is the dead-letter reason."""


Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
# Event time may be simulated (the past), but not absurd: no earlier than 2000-01-01, no later than
# a day ahead of the wall clock.
MAX_FEED_SIZE = 200
DEAD_LETTER_PAYLOAD_LIMIT = 256 * 1024  # characters of the rejected payload kept in a dead letter
_MIN_TS = 946_684_800.0
_FUTURE_SLACK_S = 86_400.0


def _check_timestamp(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("timestamp must be a finite number of epoch seconds")
    if v < _MIN_TS:
        raise ValueError(f"timestamp {v} is before 2000-01-01 (epoch seconds expected)")
    if v > time.time() + _FUTURE_SLACK_S:
        raise ValueError(f"timestamp {v} is more than a day in the future")
    return v


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # The largest wire message accepted: a bound on what one producer can make every consumer parse and
    # hold (a member event with a megabyte of attributes is an attack or a bug, not activity).
    MAX_BYTES: ClassVar[int] = 1_000_000

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class ItemType(StrEnum):
    POST = "post"
    JOB = "job"
    COURSE = "course"
    MEMBER = "member"


class EventType(StrEnum):
    MEMBER_JOINED = "member_joined"
    CONNECTION_MADE = "connection_made"
    FOLLOW = "follow"
    BLOCK = "block"
    POST_CREATED = "post_created"
    JOB_POSTED = "job_posted"
    COURSE_PUBLISHED = "course_published"
    IMPRESSION = "impression"
    CLICK = "click"
    LIKE = "like"
    COMMENT = "comment"
    SHARE = "share"
    APPLY = "apply"
    ENROLL = "enroll"
    CONNECT = "connect"
    HIDE = "hide"


CREATION_TYPES = {
    EventType.POST_CREATED: ItemType.POST,
    EventType.JOB_POSTED: ItemType.JOB,
    EventType.COURSE_PUBLISHED: ItemType.COURSE,
}
# Edges between two actors: the other actor is the item (item_type=member).
EDGE_TYPES = {EventType.CONNECTION_MADE, EventType.FOLLOW, EventType.BLOCK}
# A member's response to an item shown in the feed; positive ones count as engagement.
RESPONSE_TYPES = {
    EventType.IMPRESSION,
    EventType.CLICK,
    EventType.LIKE,
    EventType.COMMENT,
    EventType.SHARE,
    EventType.APPLY,
    EventType.ENROLL,
    EventType.CONNECT,
    EventType.HIDE,
}
ENGAGEMENT_TYPES = RESPONSE_TYPES - {EventType.IMPRESSION, EventType.HIDE}

AttributeValue = str | int | float | bool | list[str]
# A post's ``visibility`` attribute: anyone, or only its author's connections.
PUBLIC = "public"
CONNECTIONS = "connections"


class MemberEvent(Message):
    """Member activity and content creation on ``member-events``, keyed by ``member_id``.

    ``member_id`` is whoever acted: a member, or a company page (``co...``) posting a job.
    ``item_actor_id`` is who created the item responded to, so that member-actor features need no join.
    """

    MAX_BYTES: ClassVar[int] = 64 * 1024

    event_id: Id
    event_type: EventType
    member_id: Id
    timestamp: float
    item_id: Id | None = None
    item_type: ItemType | None = None
    item_actor_id: Id | None = None
    attributes: dict[Annotated[str, Field(max_length=64)], AttributeValue] = Field(default_factory=dict)

    _ts = field_validator("timestamp")(_check_timestamp)

    @model_validator(mode="after")
    def _fields_for_type(self) -> MemberEvent:
        et = self.event_type
        if et == EventType.MEMBER_JOINED:
            if self.item_id is not None:
                raise ValueError("member_joined takes no item_id")
            return self
        if self.item_id is None or self.item_type is None:
            raise ValueError(f"{et.value} requires item_id and item_type")
        if et in CREATION_TYPES and self.item_type != CREATION_TYPES[et]:
            raise ValueError(f"{et.value} requires item_type={CREATION_TYPES[et].value}, got {self.item_type.value}")
        if et in EDGE_TYPES:
            if self.item_type != ItemType.MEMBER:
                raise ValueError(f"{et.value} requires item_type=member (the other actor)")
            if self.item_id == self.member_id:
                raise ValueError(f"{et.value} of {self.member_id} with itself")
        if et in RESPONSE_TYPES and self.item_actor_id is None:
            raise ValueError(f"{et.value} requires item_actor_id (who created the item)")
        return self


class FeedRequest(Message):
    """A member opened the feed; on ``feed-requests``, keyed by ``request_id``."""

    MAX_BYTES: ClassVar[int] = 4 * 1024

    request_id: Id
    member_id: Id
    requested_at: float
    feed_size: int = Field(default=20, ge=1, le=MAX_FEED_SIZE)

    _ts = field_validator("requested_at")(_check_timestamp)

    @staticmethod
    def new(member_id: str, feed_size: int = 20) -> FeedRequest:
        return FeedRequest(
            request_id=uuid.uuid4().hex, member_id=member_id, requested_at=time.time(), feed_size=feed_size
        )


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: Id
    item_type: ItemType
    actor_id: Id
    score: Score
    features: dict[Annotated[str, Field(max_length=64)], float] = Field(default_factory=dict)


class FprCandidates(Message):
    """One FPR's top-k for one request; on ``fpr-candidates``, keyed by ``request_id``."""

    request_id: Id
    member_id: Id
    source: Id
    model_version: str = Field(max_length=128)
    generated_at: float
    candidates: list[Candidate] = Field(max_length=2000)
    # The end of the traffic the FPR's model was trained on (None: not known). If the model learns
    # parameters per item (``learns_items``), items created after it are new to the model, whose scores
    # for them the second pass cannot take at face value; if not, no item is new to it.
    trained_until: float | None = None
    learns_items: bool = True

    _ts = field_validator("generated_at")(_check_timestamp)

    @field_validator("trained_until")
    @classmethod
    def _trained_until(cls, v: float | None) -> float | None:
        return None if v is None else _check_timestamp(v)

    @property
    def new_items_after(self) -> float | None:
        """From when items are new to the model (``rankers.fpr.new_items_after``); None: never, or not known."""
        return self.trained_until if self.learns_items else None


class FeedItem(BaseModel):
    """One slot of a feed. ``score`` is the second pass's P(engage) at this position; ``propensity`` is
    the exact probability that the mixer's policy (exploration included) put this item here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: Id
    item_type: ItemType
    actor_id: Id
    source: Id
    score: Score
    position: int = Field(ge=0)
    propensity: float = Field(default=1.0, gt=0.0, le=1.0)


class RankedFeed(Message):
    """The feed a member sees; on ``ranked-feeds``, keyed by ``member_id``."""

    request_id: Id
    member_id: Id
    generated_at: float
    items: list[FeedItem]
    sources_answered: list[Id]
    sources_missing: list[Id] = Field(default_factory=list)
    model_version: str  # the second pass's, e.g. spr/v20261123-101500-123456
    model_versions: dict[Id, str] = Field(default_factory=dict)  # every model behind the feed: spr and each FPR
    timed_out: bool = False
    degraded: bool = False  # scored without online features or served history (Redis was unavailable)
    gather_ms: float = Field(default=0.0, ge=0.0)  # from the mixer reading the request to publishing the feed
    mix_ms: float = Field(default=0.0, ge=0.0)  # of gather_ms, the part spent mixing once the answers were in


class DeadLetter(Message):
    """A message some service could not accept, kept whole with why; on ``dead-letters``."""

    service: str
    source_topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    payload: str
    payload_truncated: bool = False
    reason: str
    failed_at: float = Field(default_factory=time.time)
    kind: Literal["dead-letter"] = "dead-letter"

    @staticmethod
    def of(
        service: str,
        source_topic: str,
        payload: bytes | None,
        reason: str,
        *,
        partition: int | None = None,
        offset: int | None = None,
        key: bytes | str | None = None,
    ) -> DeadLetter:
        """Keep the rejected payload whole up to the limit, decoded losslessly (bad bytes escaped)."""
        text = (payload or b"").decode("utf-8", errors="backslashreplace")
        if isinstance(key, bytes):
            key = key.decode("utf-8", errors="backslashreplace")
        return DeadLetter(
            service=service,
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            key=key,
            payload=text[:DEAD_LETTER_PAYLOAD_LIMIT],
            payload_truncated=len(text) > DEAD_LETTER_PAYLOAD_LIMIT,
            reason=reason[:2000],
        )


M = TypeVar("M", bound=Message)

# One set per combination of fields given (see ``share_fields_set``).
_FIELDS_SETS: dict[frozenset[str], set[str]] = {}


def share_fields_set(message: M) -> M:
    """``message``, sharing pydantic's record of which fields were given with every message given the
    same ones. Pydantic keeps a set per instance, nearly half of a member event's memory (728 of 1,540
    bytes), and a trainer or an evaluation holds millions of events: code that holds messages calls
    this (``simulator.session.events_to_member_events``). Parsing does not: a consumer that folds each
    message and drops it would pay about 0.4 us per message, a seventh of a member event's parse, for
    nothing. Safe, as a message is frozen and pydantic's copies (``model_copy``) copy the set before
    changing it."""
    given = message.__pydantic_fields_set__
    object.__setattr__(message, "__pydantic_fields_set__", _FIELDS_SETS.setdefault(frozenset(given), given))
    return message


def parse_all(model: type[M], raws: Sequence[bytes | str | None]) -> list[M] | None:
    """Every message decoded and validated, or None if any is bad (then :func:`parse` each, for the
    reasons). The common all-good batch skips a Python call per message (~2 us of ~8)."""
    try:
        if max(map(len, raws), default=0) > model.MAX_BYTES:
            return None
        return list(map(model.__pydantic_validator__.validate_json, raws))
    except (ValidationError, UnicodeDecodeError, TypeError, ValueError):
        return None


def parse(model: type[M], raw: bytes | str | None) -> M:
    """Decode and validate one wire message, or raise ContractError naming what is wrong."""
    if raw is None:
        raise ContractError("empty message (no value)")
    if len(raw) > model.MAX_BYTES:
        raise ContractError(f"message of {len(raw)} bytes is over {model.__name__}'s limit of {model.MAX_BYTES}")
    try:
        return model.model_validate_json(raw)  # one pass in pydantic-core: decoding and validation
    except ValidationError as err:
        errors = err.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            raise ContractError(f"malformed JSON: {errors[0]['msg']}") from None
        if len(errors) == 1 and errors[0]["type"] == "model_type" and not errors[0]["loc"]:
            got = type(errors[0]["input"]).__name__
            raise ContractError(f"expected a JSON object for {model.__name__}, got {got}") from None
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or model.__name__}: {e['msg']}" for e in errors[:5])
        raise ContractError(f"invalid {model.__name__}: {problems}") from None
    except UnicodeDecodeError as err:
        raise ContractError(f"malformed JSON: {err}") from None


def topic_name(topic: Topic, prefix: str = "") -> str:
    return f"{prefix}{topic.value}"
