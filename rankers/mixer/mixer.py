"""Feed assembly: merge the FPRs' candidates, score them with the SPR, then apply the rules in order.

Pure: the candidates and their stored features arrive as named columns (plain arrays in serving,
DataFrames offline), the member's graph and the items'
creation facts as an object (the mixer's inventory), what was served recently as a mapping. The
same code serves the live mixer and the offline evaluation of the whole system.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from features.families import Columns, as_columns, derive_columns, numeric
from feedrank.contracts import PUBLIC, Candidate
from rankers.fpr import FirstPassRanker
from rankers.inventory import Inventory
from rankers.mixer.spr import SecondPassRanker, new_to_fpr
from rankers.rules.base import UNVERIFIED, Graph, RerankContext, RerankRule, Slot
from rankers.vectors import sigmoid

CANDIDATE_COLUMNS = ["item_id", "item_type", "actor_id", "source", "fpr_score", "fpr_model_age_s"]
NUMERIC_CANDIDATE_COLUMNS = {"fpr_score", "fpr_model_age_s"}


class Catalog(Graph, Protocol):
    """What the mixer's inventory knows: the graph, the members who joined, and each created item
    (``actor_id``, ``created_at``, ``visibility``)."""

    items: Mapping[str, Any]
    members: Mapping[str, Any]


def candidate_columns(
    answers: Iterable[tuple[str, Sequence[Candidate]]],
    now: float = math.nan,
    new_items_after: Mapping[str, float | None] | None = None,
) -> dict[str, np.ndarray]:
    """Every FPR's answer, as (source, candidates) pairs, as ``CANDIDATE_COLUMNS``. ``fpr_model_age_s``
    is how long before ``now`` items became new to each source's model (``new_items_after`` by source,
    :func:`rankers.fpr.new_items_after`; NaN where unknown or never)."""
    new_items_after = new_items_after or {}
    rows = [
        (c.item_id, c.item_type.value, c.actor_id, source, c.score, now - (new_items_after.get(source) or math.nan))
        for source, cs in answers
        for c in cs
    ]
    if not rows:
        return {c: np.array([], dtype=float if c in NUMERIC_CANDIDATE_COLUMNS else object) for c in CANDIDATE_COLUMNS}
    ids, types, actors, sources, scores, model_ages = zip(*rows, strict=True)
    return {
        "item_id": np.array(ids, dtype=object),
        "item_type": np.array(types, dtype=object),
        "actor_id": np.array(actors, dtype=object),
        "source": np.array(sources, dtype=object),
        "fpr_score": np.array(scores, dtype=float),
        "fpr_model_age_s": np.array(model_ages, dtype=float),
    }


def candidate_frame(
    answers: Iterable[tuple[str, Sequence[Candidate]]],
    now: float = math.nan,
    new_items_after: Mapping[str, float | None] | None = None,
) -> pd.DataFrame:
    """:func:`candidate_columns` as a DataFrame (what the offline evaluations join on)."""
    return pd.DataFrame(candidate_columns(answers, now, new_items_after))


def answer_in_process(
    rankers: Mapping[str, FirstPassRanker], inv: Inventory, member_id: str, now: float
) -> tuple[dict[str, list[Candidate]], pd.DataFrame]:
    """Every FPR's top-k for one request, and the mixer's candidate frame of them: the offline
    evaluations' stand-in for the mixer service's scatter-gather over Kafka."""
    answers = {name: r.top_k(inv, member_id, now) for name, r in rankers.items()}
    return answers, candidate_frame(answers.items(), now, {name: r.new_items_after(now) for name, r in rankers.items()})


def spr_inputs(raw: Columns, items: Sequence[Any], now: float) -> dict[str, np.ndarray]:
    """The SPR's input rows from the candidates' fields and stored features (``raw``) and their
    catalog ``items``: derived stream features, the candidate's fields, its age, position 0. The one
    definition serving and any log of served candidates (``evaluation.served_log``) share."""
    created = np.array([getattr(item, "created_at", np.nan) for item in items], dtype=float)
    return {
        **derive_columns(raw, now),
        **raw,
        "item_age_s": now - created,
        "position": np.zeros(len(created)),
    }


@dataclass
class MixResult:
    """The feed (``slots``, in order, truncated) and what explains it."""

    slots: list[Slot]
    pctr: np.ndarray  # the SPR's P(engage) of each feed item at its final position
    # per family, each feed item's share of its logit at its position, the calibration layer's last
    contributions: dict[str, np.ndarray]
    dropped: dict[str, str] = field(default_factory=dict)  # item_id -> the rule that removed it
    candidates: int = 0

    def contribution_rows(self) -> list[dict[str, float]]:
        """Per feed item, each family's share of the logit."""
        names = list(self.contributions)
        return [
            dict(zip(names, map(float, row), strict=True)) for row in zip(*self.contributions.values(), strict=True)
        ]


class FeedMixer:
    """Scores candidates with the SPR at the top position (calibrated for the serving policy), runs the
    rules, and re-estimates each item's pCTR at the position it ends at."""

    def __init__(self, model: SecondPassRanker, rules: Sequence[RerankRule]) -> None:
        self.model = model
        self.rules = list(rules)

    def mix(
        self,
        request_id: str,
        member_id: str,
        feed_size: int,
        now: float,
        candidates: pd.DataFrame | Columns,
        stored: pd.DataFrame | Columns,
        catalog: Catalog,
        served: Mapping[str, float] | None = None,
    ) -> MixResult:
        """``stored`` holds the stored feature columns (``view__column``) of each candidate, row for row."""
        served = served or {}
        cands = as_columns(candidates)
        raw = {**as_columns(stored), **cands}
        n = len(cands["item_id"])
        if n == 0:
            return MixResult([], np.zeros(0), {}, {}, 0)
        ids = cands["item_id"].tolist()
        items = [catalog.items.get(i) for i in ids]
        X = spr_inputs(raw, items, now)
        terms = self.model.terms(X)
        raw0 = terms.sum(axis=1) + self.model.intercept
        sources = np.asarray(cands["source"]).astype(str)
        new_item = new_to_fpr(X)
        p0 = sigmoid(self.model.calibrate(raw0, sources, new_item)).tolist()
        imps = numeric(raw, "member_item__imp_total").tolist()
        engs = numeric(raw, "member_item__eng_total").tolist()
        hides = numeric(raw, "member_item__hide_total").tolist()
        fpr_scores = numeric(raw, "fpr_score", math.nan).tolist()
        slots: list[Slot] = []
        members = catalog.members
        columns = (cands["item_type"].tolist(), cands["actor_id"].tolist(), cands["source"].tolist())
        for j, (item_id, item_type, actor_id, source, item) in enumerate(zip(ids, *columns, items, strict=True)):
            if item is not None:
                # The catalog's author and visibility, not the FPR's labels: naming another actor must
                # not carry a post past a block or a connections-only setting.
                actor_id, created_at, visibility = item.actor_id, item.created_at, item.visibility
            elif item_type == "member" and item_id in members:
                created_at, visibility = None, PUBLIC  # a card of a known member (cards are never created items)
            else:
                # Not in the catalog (created after its last event, or no such item): nothing vouches for
                # its actor or visibility, so the visibility rule drops it (fail closed).
                created_at, visibility = None, UNVERIFIED
            slots.append(
                Slot(
                    item_id,
                    item_type,
                    actor_id,
                    source,
                    p0[j],
                    pctr=p0[j],
                    fpr_score=fpr_scores[j],
                    created_at=created_at,
                    visibility=visibility,
                    impressions=imps[j],
                    engagements=engs[j],
                    hidden=hides[j] > 0,
                    served_at=served.get(item_id),
                )
            )
        row_of = {id(s): j for j, s in enumerate(slots)}
        slots.sort(key=lambda s: (-s.score, s.item_id))
        ctx = RerankContext(
            member_id=member_id,
            feed_size=feed_size,
            now=now,
            request_id=request_id,
            graph=catalog,
        )
        dropped: dict[str, str] = {}
        for rule in self.rules:
            before = slots
            slots = rule.apply(slots, ctx)
            if len(slots) < len(before):
                kept = {id(s) for s in slots}
                for s in before:
                    if id(s) not in kept:
                        dropped.setdefault(s.item_id, rule.name)
        slots = slots[:feed_size]
        shown_ids = {s.item_id for s in slots}
        dropped = {i: rule for i, rule in dropped.items() if i not in shown_ids}  # a duplicate's other copy
        rows = np.array([row_of[id(s)] for s in slots], dtype=int)
        # At position p only the position terms differ from the top of the feed, by ``position_effect``.
        effect = self.model.position_effect(np.arange(len(slots)), np.array([s.item_type for s in slots]))
        raw = raw0[rows] + effect
        logit = self.model.calibrate(raw0[rows], sources[rows], new_item[rows], position_effect=effect)
        contributions = self.model.family_sums(terms[rows])
        contributions["position"] = contributions["position"] + effect
        contributions["calibration"] = logit - raw
        return MixResult(slots, sigmoid(logit), contributions, dropped, n)
