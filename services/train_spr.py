"""``feedrank train spr``: fit the second-pass model on point-in-time rows and save a versioned artifact.

The FPR scores in the rows are those the serving FPRs give: each FPR's current trained model (or its
baseline), replayed at each request's time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from features.training_set import build_training_set
from feedrank.contracts import MemberEvent
from feedrank.settings import Settings
from rankers.calibration import calibration_report
from rankers.mixer.spr import SCHEMA, SecondPassRanker
from rankers.registry import load_config
from services.fpr_service import load_ranker
from services.model_store import ModelStore

HOLDOUT = 0.2


def spr_training_set(settings: Settings, events: Iterable[MemberEvent]) -> pd.DataFrame:
    """Training rows scored by the FPRs the services would load now, in time order."""
    config = load_config(settings.pipeline_config)
    scorers = {name: load_ranker(settings, spec).scorer for name, spec in config.fprs.items()}
    data = build_training_set(events, scorers, config.source_of_type)
    if len(data) < 50:
        raise ValueError(f"only {len(data)} training rows (impressions of items the FPRs score); need more traffic")
    return data.sort_values("timestamp", kind="stable").reset_index(drop=True)


def train_spr(
    settings: Settings, events: Iterable[MemberEvent], description: str, C: float = 1.0
) -> tuple[str, dict[str, Any]]:
    """Fit on the first 80% of the rows in time, report on the rest, then refit on all of them and save.

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
