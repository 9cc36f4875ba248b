"""Feed assembly: merge the FPRs' candidates, score them with the SPR, then apply the rules in order.

Pure: the candidates' stored features arrive as a DataFrame, the member's graph and the items'
creation facts as an object (the mixer's inventory), what was served recently as a mapping. The
same code serves the live mixer and the offline evaluation of the whole system.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from features.families import derive, numeric
from feedrank.contracts import Candidate
from rankers.mixer.spr import SecondPassRanker
from rankers.rules.base import Graph, RerankContext, RerankRule, Slot
from rankers.vectors import sigmoid

CANDIDATE_COLUMNS = ["item_id", "item_type", "actor_id", "source", "fpr_score"]


class Catalog(Graph, Protocol):
    """What the mixer's inventory knows: the graph, and each created item (``created_at``, ``visibility``)."""

    items: Mapping[str, Any]


def candidate_frame(answers: Iterable[tuple[str, Sequence[Candidate]]]) -> pd.DataFrame:
    """Every FPR's answer, as (source, candidates) pairs, as one frame of ``CANDIDATE_COLUMNS``."""
    rows = [(c.item_id, c.item_type.value, c.actor_id, source, c.score) for source, cs in answers for c in cs]
    return pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)


@dataclass
class MixResult:
    """The feed (``slots``, in order, truncated) and what explains it."""

    slots: list[Slot]
    pctr: np.ndarray  # the SPR's P(engage) of each feed item at its final position
    contributions: pd.DataFrame  # per feed item: each feature family's share of the logit
    dropped: dict[str, str] = field(default_factory=dict)  # item_id -> the rule that removed it
    candidates: int = 0


class FeedMixer:
    """Scores candidates with the SPR at the top position, runs the rules, and re-estimates each
    item's pCTR at the position it ends at."""

    def __init__(self, model: SecondPassRanker, rules: Sequence[RerankRule]) -> None:
        self.model = model
        self.rules = list(rules)

    def features(self, candidates: pd.DataFrame, stored: pd.DataFrame, catalog: Catalog, now: float) -> pd.DataFrame:
        """The SPR's input rows: derived stream features, the candidate's fields, its age, position 0."""
        derived = derive(stored.reset_index(drop=True), now)
        created = np.array(
            [getattr(catalog.items.get(i), "created_at", np.nan) for i in candidates["item_id"]], dtype=float
        )
        X = derived.join(candidates.reset_index(drop=True))
        X["item_age_s"] = now - created
        X["position"] = 0
        return X

    def mix(
        self,
        request_id: str,
        member_id: str,
        feed_size: int,
        now: float,
        candidates: pd.DataFrame,
        stored: pd.DataFrame,
        catalog: Catalog,
        served: Mapping[str, float] | None = None,
    ) -> MixResult:
        """``stored`` holds the stored feature columns (``view__column``) of each candidate, row for row."""
        served = served or {}
        n = len(candidates)
        if n == 0:
            return MixResult([], np.zeros(0), pd.DataFrame(), {}, 0)
        X = self.features(candidates, stored, catalog, now)
        logit0 = self.model.decision_function(X)
        p0 = sigmoid(logit0)
        imps = numeric(stored, "member_item__imp_total")
        engs = numeric(stored, "member_item__eng_total")
        hides = numeric(stored, "member_item__hide_total")
        slots: list[Slot] = []
        for j, r in enumerate(candidates.itertuples(index=False)):
            item = catalog.items.get(r.item_id)
            slots.append(
                Slot(
                    r.item_id,
                    r.item_type,
                    r.actor_id,
                    r.source,
                    float(p0[j]),
                    pctr=float(p0[j]),
                    created_at=getattr(item, "created_at", None),
                    visibility=getattr(item, "visibility", "public"),
                    impressions=float(imps[j]),
                    engagements=float(engs[j]),
                    hidden=bool(hides[j] > 0),
                    served_at=served.get(r.item_id),
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
        positions = np.arange(len(slots))
        pctr = sigmoid(logit0[rows] + self.model.position_effect(positions, np.array([s.item_type for s in slots])))
        shown = X.iloc[rows].copy()
        shown["position"] = positions
        contributions = self.model.contributions(shown).reset_index(drop=True) if len(rows) else pd.DataFrame()
        return MixResult(slots, pctr, contributions, dropped, n)
