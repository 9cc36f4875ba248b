"""A ranker configuration of this project as a policy table, for off-policy evaluation of logged traffic.

``feedrank eval replay --policy spr/VERSION`` estimates what a second-pass model version would have
earned on logged traffic. The estimators need the evaluated policy as a table
``request_id, position, item_id, probability``: the probability that the policy shows that item at
that position for that request (rows not listed: 0). ``ranker_policy_table`` produces it by running
the system over the logged requests, as serving would have answered them:

- the member events of the traffic (a ``feedrank simulate --out`` folder) are replayed once, in time
  order; each logged request is answered when its time comes, with the inventory and the stored
  feature rows as they stood just before it (``evaluation.feed_oracle.FeatureInventory``);
- every configured FPR (``config/pipeline.toml``, each with its current trained model or its baseline,
  as ``services.fpr_service.load_ranker`` loads it) answers its top-k;
- the mixer (``FeedMixer``) scores the candidates with the chosen SPR version and applies the
  configured re-ranking rules. What the member was served recently (the served rule's input) is what
  the log's impressions say they were shown, within ``served_ttl_s``; the feed size of a request is its
  logged slate's (its deepest logged position), unless ``feed_size`` is given.

Spec: ``spr`` is the current SPR version of the model store (``models/spr/CURRENT``), ``spr/VERSION``
a given one; anything else is a ``RankerPolicyError`` that lists the versions there are.

Conventions:

- Positions follow the log's convention: 0-based (this project's simulator and impression log) or
  1-based (a log whose smallest position is 1); inferred from the log unless ``position_base`` says.
- Exploration is off by default: the table is the deterministic feed (probability 1 per row, one row
  per position), the policy replay needs and the one that would be deployed. With ``explore=True`` the
  configured exploration rule stays in, and the table holds its exact distribution: at each position of
  the exploration pool, every pool item with probability ``epsilon / n`` plus ``1 - epsilon`` for the
  item the greedy order puts there (probabilities sum to 1 per position); pinned positions keep their
  item with probability 1. That needs exploration to be the last rule before truncation, as the rule
  itself requires; a pipeline without exploration gives the deterministic table either way.
- Requests of a member unknown at their time (no ``member_joined`` before the request) get no rows,
  nor do requests for which no candidate survived the rules; both are counted in ``table.attrs`` and
  unknown members are warned about (``UnknownMembersWarning``).

The limitation every offline evaluator has (support): replay, IPS and SNIPS only credit the policy's
(item, position) pairs the logging policy could have shown and did log. Items the FPRs' candidate
sources produce that were never logged for that request cannot match, so an estimate covers only the
overlap of the two policies. ``table.attrs["coverage"]`` is the share of the policy's slots (weighted
by probability) whose item appears anywhere in that request's log rows, and ``attrs["exact_coverage"]``
the share whose item was logged at that very position; a low coverage means the estimate rests on few
matches and says little about the policy's other choices.

``table.attrs`` also holds: ``policy`` (``spr/VERSION``), ``spr_version``, ``fpr_versions``,
``requests`` (distinct logged requests), ``requests_with_rows``, ``unknown_members``, ``empty_feeds``,
``explore``, ``epsilon``, ``position_base``, ``seconds``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.feature_replay import FeatureInventory, stored_arrays
from feedrank.contracts import EventType, MemberEvent
from feedrank.progress import progress_bar
from feedrank.settings import Settings, get_settings
from rankers.fpr import FirstPassRanker
from rankers.inventory import Inventory
from rankers.mixer.mixer import FeedMixer, answer_in_process
from rankers.mixer.spr import SCHEMA, SecondPassRanker
from rankers.registry import ConfigError, load_config
from rankers.rules.base import RerankContext, RerankRule, Slot
from rankers.training import NoProgress, Progress, replay
from services.fpr_service import load_ranker
from services.fpr_training import TrafficNotFound, load_events
from services.model_store import Artifact, ModelNotFound, ModelStore, load_spr

SPR = "spr"
POLICY_COLUMNS = ["request_id", "position", "item_id", "probability"]
LOG_COLUMNS = ["request_id", "member_id", "timestamp", "position", "item_id"]
EXPLORATION = "exploration"
TRUNCATE = "truncate"


class RankerPolicyError(ValueError):
    """A policy spec, model version, log or data folder the policy table cannot be built from; the
    message says what is wrong and what there is."""


class UnknownMembersWarning(UserWarning):
    """Some logged requests are for members the replayed events do not know at that time."""


# ------------------------------------------------------------------ spec and models


@dataclass(frozen=True)
class PolicySpec:
    """A parsed ``--policy`` spec: the SPR, at a given version or the current one (``None``)."""

    ranker: str
    version: str | None = None


def _available(store: ModelStore) -> str:
    versions = store.versions(SPR)
    if not versions:
        return f"no SPR model under {store.root / SPR}; train one with `feedrank train spr`"
    cur = store.current(SPR)
    shown = ", ".join(f"{v} (current)" if v == cur else v for v in versions)
    return f"available under {store.root / SPR}: {shown}"


def parse_spec(spec: str) -> PolicySpec:
    """``spr`` or ``spr/VERSION``; anything else raises ``RankerPolicyError``."""
    name, sep, version = spec.strip().partition("/")
    if name != SPR or (sep and not version) or "/" in version:
        raise RankerPolicyError(
            f"unknown ranker policy {spec!r}: expected {SPR!r} (the current second-pass model) or "
            f"'{SPR}/VERSION' (a saved version), or a policy table file"
        )
    return PolicySpec(SPR, version or None)


def load_policy_spr(store: ModelStore, spec: PolicySpec) -> Artifact:
    """The SPR artifact the spec names, refusing one trained on other input columns (as serving does)."""
    if spec.version is not None and spec.version not in store.versions(SPR):
        raise RankerPolicyError(f"SPR version {spec.version!r} does not exist; {_available(store)}")
    if spec.version is None and store.current(SPR) is None:
        raise RankerPolicyError(f"no current SPR version; {_available(store)}")
    try:
        return load_spr(store, SCHEMA, spec.version)
    except ModelNotFound as err:
        raise RankerPolicyError(str(err)) from None


# ------------------------------------------------------------------ the replay


@dataclass
class ServedInventory(FeatureInventory):
    """The feature inventory plus, per member, when each item was last shown to them (the log's
    impressions): the served history the mixer's served rule reads."""

    shown: dict[str, dict[str, float]] = field(default_factory=dict)

    def apply(self, e: MemberEvent) -> None:
        super().apply(e)
        if e.event_type == EventType.IMPRESSION and e.item_id is not None:
            self.shown.setdefault(e.member_id, {})[e.item_id] = e.timestamp

    def recent(self, member_id: str, now: float, ttl_s: float) -> dict[str, float]:
        """Item id -> when last shown to the member, within ``ttl_s`` before ``now`` (older ones are
        forgotten, as the served store trims them)."""
        shown = self.shown.get(member_id)
        if not shown:
            return {}
        kept = {i: t for i, t in shown.items() if t >= now - ttl_s}
        self.shown[member_id] = kept
        return kept


class _Capture:
    """Stands in for the exploration rule: keeps the greedy slate it is handed, unchanged."""

    name = "exploration-capture"

    def __init__(self) -> None:
        self.slots: list[Slot] = []

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        for s in slots:
            s.propensity = 1.0
        self.slots = list(slots)
        return slots


def _exploration_rule(rules: Sequence[RerankRule]) -> tuple[int, Any] | None:
    """The index and the rule of the configured exploration, checked to be the last before truncation."""
    at = [i for i, r in enumerate(rules) if getattr(r, "name", "") == EXPLORATION]
    if not at:
        return None
    if len(at) > 1:
        raise RankerPolicyError("the pipeline has more than one exploration rule; explore=True needs one")
    later = [getattr(r, "name", "") for r in rules[at[0] + 1 :]]
    if any(n != TRUNCATE for n in later):
        raise RankerPolicyError(
            f"explore=True needs exploration to be the last rule before truncation; it is followed by {later}"
        )
    return at[0], rules[at[0]]


def _requests(log: pd.DataFrame) -> pd.DataFrame:
    """One row per logged request (request_id, member_id, timestamp, slate), in time order."""
    missing = [c for c in LOG_COLUMNS if c not in log]
    if missing:
        raise RankerPolicyError(f"the log lacks column(s) {missing} needed to rerun its requests")
    frame = log[LOG_COLUMNS].copy()
    frame["request_id"] = frame["request_id"].astype(str)
    frame["member_id"] = frame["member_id"].astype(str)
    frame["timestamp"] = pd.to_numeric(frame["timestamp"], errors="coerce").astype(np.float64)
    frame["position"] = pd.to_numeric(frame["position"], errors="coerce")
    if frame["timestamp"].isna().any() or frame["position"].isna().any():
        raise RankerPolicyError("the log has rows without a numeric timestamp or position")
    grouped = frame.groupby("request_id", sort=False)
    req = grouped.agg(member_id=("member_id", "first"), timestamp=("timestamp", "min"), last=("position", "max"))
    req = req.reset_index().sort_values(["timestamp", "request_id"], kind="stable")
    return req.reset_index(drop=True)


def infer_position_base(log: pd.DataFrame) -> int:
    """0 when some logged position is 0 (this project's logs), else 1."""
    positions = pd.to_numeric(log["position"], errors="coerce")
    return 0 if len(positions) == 0 or (positions == 0).any() else 1


def policy_table(
    log: pd.DataFrame,
    events: Sequence[MemberEvent],
    rankers: Mapping[str, FirstPassRanker],
    spr: SecondPassRanker,
    rules: Sequence[RerankRule],
    *,
    explore: bool = False,
    feed_size: int | None = None,
    position_base: int | None = None,
    served_ttl_s: float = 3600.0,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """The policy table of the system made of ``rankers`` (the FPRs, by name), ``spr`` and ``rules``
    over the requests of ``log``, replaying ``events`` (time-ordered) up to each of them.

    Pure logic (no model store, no files): ``ranker_policy_table`` loads these from a spec. See the
    module docstring for the conventions and for ``attrs``."""
    started = time.perf_counter()
    progress = progress or NoProgress()
    if feed_size is not None and feed_size < 1:
        raise RankerPolicyError(f"feed_size must be at least 1, got {feed_size}")
    requests = _requests(log)
    base = infer_position_base(log) if position_base is None else position_base
    if base not in (0, 1):
        raise RankerPolicyError(f"position_base must be 0 or 1, got {position_base}")
    rules = list(rules)
    exploration = _exploration_rule(rules) if explore else None
    capture = _Capture()
    if exploration is not None:
        rules[exploration[0]] = capture  # the greedy slate; the distribution is computed from it
    else:
        rules = [r for r in rules if getattr(r, "name", "") != EXPLORATION]
    mixer = FeedMixer(spr, rules)

    logged_items: dict[str, set[str]] = {}
    logged_at: dict[tuple[str, int], set[str]] = {}
    for rid, pos, item in zip(
        log["request_id"].astype(str),
        pd.to_numeric(log["position"]).astype(int),
        log["item_id"].astype(str),
        strict=True,
    ):
        logged_items.setdefault(rid, set()).add(item)
        logged_at.setdefault((rid, pos), set()).add(item)

    out_rid: list[str] = []
    out_pos: list[int] = []
    out_item: list[str] = []
    out_p: list[float] = []
    stats = {"unknown_members": 0, "empty_feeds": 0, "requests_with_rows": 0}

    def emit(rid: str, pos: int, item: str, p: float) -> None:
        out_rid.append(rid)
        out_pos.append(pos + base)
        out_item.append(item)
        out_p.append(p)

    def answer(inv: ServedInventory, rid: str, member_id: str, t: float, size: int) -> None:
        if member_id not in inv.members:
            stats["unknown_members"] += 1
            return
        _, cands = answer_in_process(rankers, inv, member_id, t)
        stored = stored_arrays(inv.rows, member_id, cands)
        capture.slots = []
        feed = mixer.mix(rid, member_id, size, t, cands, stored, inv, inv.recent(member_id, t, served_ttl_s))
        if not feed.slots:
            stats["empty_feeds"] += 1
            return
        stats["requests_with_rows"] += 1
        if exploration is None:
            for pos, s in enumerate(feed.slots):
                emit(rid, pos, s.item_id, 1.0)
            return
        rule = exploration[1]
        greedy = capture.slots
        pool = rule.pool_positions(greedy, size)
        in_pool = set(pool)
        for pos in range(len(feed.slots)):
            if pos not in in_pool:
                emit(rid, pos, greedy[pos].item_id, 1.0)
                continue
            for j in pool:
                emit(rid, pos, greedy[j].item_id, rule.propensity(len(pool), j == pos))

    def on_chunk(inv: Inventory, chunk: pd.DataFrame) -> None:
        assert isinstance(inv, ServedInventory)
        for rid, member_id, t, last in zip(
            chunk["request_id"], chunk["member_id"], chunk["timestamp"], chunk["last"], strict=True
        ):
            size = feed_size if feed_size is not None else max(1, int(last) - base + 1)
            answer(inv, rid, member_id, float(t), size)

    if len(requests):
        replay(
            events,
            requests,
            on_chunk,
            chunk_seconds=0.0,  # one request per chunk: the inventory and the features as of that very request
            until=float(requests["timestamp"].max()),
            progress=progress,
            inventory=ServedInventory(),
        )

    columns = [
        pd.Series(out_rid, dtype=object),
        np.asarray(out_pos, dtype=np.int64),
        pd.Series(out_item, dtype=object),
        np.asarray(out_p, dtype=np.float64),
    ]
    table = pd.DataFrame(dict(zip(POLICY_COLUMNS, columns, strict=True)))
    if exploration is not None and len(table):  # a repeated item (no dedupe rule) adds up at a position
        table = table.groupby(["request_id", "position", "item_id"], sort=False, as_index=False)["probability"].sum()
    weight = float(table["probability"].sum())
    anywhere = np.fromiter(
        (i in logged_items.get(r, ()) for r, i in zip(table["request_id"], table["item_id"], strict=True)),
        dtype=bool,
        count=len(table),
    )
    exact = np.fromiter(
        (
            i in logged_at.get((r, p), ())
            for r, p, i in zip(table["request_id"], table["position"], table["item_id"], strict=True)
        ),
        dtype=bool,
        count=len(table),
    )
    prob = table["probability"].to_numpy()
    if stats["unknown_members"]:
        warnings.warn(
            f"{stats['unknown_members']} of {len(requests)} logged requests are for members unknown at their "
            "time (no member_joined event before the request): they get no policy rows",
            UnknownMembersWarning,
            stacklevel=2,
        )
    table.attrs.update(
        {
            "requests": len(requests),
            **stats,
            "coverage": float(prob[anywhere].sum() / weight) if weight > 0 else float("nan"),
            "exact_coverage": float(prob[exact].sum() / weight) if weight > 0 else float("nan"),
            "explore": exploration is not None,
            "epsilon": float(exploration[1].epsilon) if exploration is not None else 0.0,
            "position_base": base,
            "seconds": round(time.perf_counter() - started, 3),
        }
    )
    return table


def ranker_policy_table(
    log: pd.DataFrame,
    spec: str,
    data: Path,
    settings: Settings | None = None,
    *,
    explore: bool = False,
    feed_size: int | None = None,
    position_base: int | None = None,
    show_progress: bool = True,
) -> pd.DataFrame:
    """The policy table (``request_id, position, item_id, probability``) of the ranker configuration
    ``spec`` (``spr`` or ``spr/VERSION``) over the requests of ``log``, replaying the member events of
    ``data`` (a ``feedrank simulate --out`` folder). The FPRs and rules are the configured ones
    (``settings.pipeline_config``), each FPR with its current model in ``settings.model_dir`` (or its
    baseline). See the module docstring for the conventions and ``table.attrs``."""
    settings = settings or get_settings()
    parsed = parse_spec(spec)
    store = ModelStore(settings.model_dir)
    artifact = load_policy_spr(store, parsed)
    try:
        config = load_config(settings.pipeline_config)
        rankers = {name: load_ranker(settings, fpr) for name, fpr in config.fprs.items()}
        rules = config.build_rules()
    except ConfigError as err:
        raise RankerPolicyError(str(err)) from None
    with progress_bar(disable=not show_progress) as progress:
        task = progress.add_task(f"loading events from {data}", total=None)
        try:
            events = load_events(Path(data))
        except TrafficNotFound as err:
            raise RankerPolicyError(str(err)) from None
        progress.update(task, total=1, completed=1)
        table = policy_table(
            log,
            events,
            rankers,
            artifact.model,
            rules,
            explore=explore,
            feed_size=feed_size,
            position_base=position_base,
            served_ttl_s=settings.served_ttl_s,
            progress=progress,
        )
    table.attrs.update(
        {
            "policy": f"{SPR}/{artifact.version}",
            "spr_version": artifact.version,
            "fpr_versions": {name: r.model_version for name, r in rankers.items()},
        }
    )
    return table
