"""``feedrank train spr``: fit the second-pass model on point-in-time rows and save a versioned artifact.

The FPR scores in the rows are those the serving FPRs give: each FPR's current trained model (or its
baseline), replayed at each request's time. Rows start where the FPR models' training traffic ends
(stacking in time): scores of impressions a model was trained on are overconfident, and a second
pass fitted on them would not be calibrated on the traffic it serves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from features.training_set import build_training_set
from feedrank.contracts import MemberEvent
from feedrank.settings import FPR_SHARE, Settings
from rankers.calibration import calibration_report
from rankers.fpr import Scorer, trained_until
from rankers.mixer.spr import SCHEMA, SecondPassRanker
from rankers.registry import load_config
from services.fpr_service import load_ranker
from services.model_store import ModelStore

HOLDOUT = 0.2
MIN_ROWS = 50


def stacked_since(scorers: Mapping[str, Scorer]) -> float | None:
    """The first moment after the latest FPR model's training traffic (None: no FPR was trained on
    traffic): an impression at its last event's time was in it."""
    ends = [t for s in scorers.values() if (t := trained_until(s)) is not None]
    return math.nextafter(max(ends), math.inf) if ends else None


def spr_training_set(settings: Settings, events: Iterable[MemberEvent]) -> pd.DataFrame:
    """Training rows scored by the FPRs the services would load now, from where their models' training
    traffic ends (:func:`stacked_since`), in time order."""
    config = load_config(settings.pipeline_config)
    scorers = {name: load_ranker(settings, spec).scorer for name, spec in config.fprs.items()}
    since = stacked_since(scorers)
    data = build_training_set(events, scorers, config.source_of_type, since=since)
    if len(data) < MIN_ROWS:
        after = ""
        if since is not None:
            at = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
            after = (
                f" after {at}, where the FPR models' training traffic ends (the second pass learns only from"
                " FPR scores of traffic they did not train on: train the FPRs on an earlier part of it,"
                f" `feedrank train fpr --until {FPR_SHARE}`, or give this command later traffic)"
            )
        raise ValueError(
            f"only {len(data)} training rows (impressions of items the FPRs score){after}; need {MIN_ROWS} or more"
        )
    return data.sort_values("timestamp", kind="stable").reset_index(drop=True)


def train_spr(
    settings: Settings, events: Iterable[MemberEvent], description: str, C: float = 1.0
) -> tuple[str, dict[str, Any]]:
    """Fit on the first 80% of the rows in time, report on the rest, then refit on all of them and save.
    The rows start where the FPR models' training traffic ends (:func:`spr_training_set`).

    Returns the version and the held-out report."""
    data = spr_training_set(settings, events)
    cut = int(len(data) * (1 - HOLDOUT))
    train, test = data.iloc[:cut], data.iloc[cut:]
    model = SecondPassRanker(C=C).fit(train, train["label"].to_numpy())
    metrics = {"rows_train": float(len(train)), **calibration_report(test, model.predict_proba(test)[:, 1])}
    final = SecondPassRanker(C=C).fit(data, data["label"].to_numpy())
    version = ModelStore(settings.model_dir).save(
        "spr",
        final,
        {"trained_on": description, "holdout": metrics, "columns": SCHEMA, "sources": final.sources_},
    )
    return version, metrics
