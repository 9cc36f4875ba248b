"""``feedrank train spr``: fit the second-pass model on labelled traffic and save a versioned artifact."""

from __future__ import annotations

from features.training_set import build_training_set
from feedrank.settings import Settings
from rankers.calibration import held_out_metrics
from rankers.mixer.spr import MODEL_COLUMNS, SecondPassRanker
from rankers.registry import load_config
from services.fpr_service import load_ranker
from services.model_store import ModelStore
from services.traffic import SimulatedTraffic


def train_spr(settings: Settings, generator: SimulatedTraffic, C: float = 1.0) -> tuple[str, dict[str, float]]:
    """Train on the generator's traffic with a time split (last 20% held out); returns version and metrics."""
    config = load_config(settings.pipeline_config)
    # the FPR scores the services will send: their current trained models (or baselines)
    scorers = {spec.serves: load_ranker(settings, spec).scorer for spec in config.fprs.values()}
    data = build_training_set(generator.events(), scorers)
    if len(data) < 50:
        raise ValueError(f"only {len(data)} training rows; generate more sessions")
    data = data.sort_values("timestamp").reset_index(drop=True)
    cut = int(len(data) * 0.8)
    train, test = data.iloc[:cut], data.iloc[cut:]
    model = SecondPassRanker(C=C).fit(train, train["label"].to_numpy())
    p = model.predict_proba(test)[:, 1]
    y = test["label"].to_numpy()
    metrics = {
        "rows_train": float(len(train)),
        "rows_test": float(len(test)),
        **held_out_metrics(y, p),
    }
    final = SecondPassRanker(C=C).fit(data, data["label"].to_numpy())
    version = ModelStore(settings.model_dir).save(
        "spr",
        final,
        {
            "trained_on": generator.describe(),
            "holdout": metrics,
            "columns": MODEL_COLUMNS,
        },
    )
    return version, metrics
