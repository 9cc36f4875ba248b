"""The offline interaction model: any member/item/timestamp file, and better than popularity on clicks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.fpr_oracle import SimulatedWorld
from evaluation.interactions import encode, evaluate_interactions
from rankers.network.offline import NetworkInteractionModel


def _clicks(sw: SimulatedWorld) -> pd.DataFrame:
    log = sw.traffic.log
    clicks = log[log["clicked"] & (log["item_type"] == "post")]
    return clicks[["member_id", "item_id", "timestamp"]].reset_index(drop=True)


def test_beats_popularity_on_simulated_clicks(small_world: SimulatedWorld) -> None:
    out = evaluate_interactions(NetworkInteractionModel(), _clicks(small_world))
    assert out["data"]["members"] > 100
    assert out["model"]["hr@10"] > out["popularity"]["hr@10"] + 0.03
    assert out["model"]["ndcg@10"] > out["popularity"]["ndcg@10"]


def test_scores_every_item_for_any_file() -> None:
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame(
        {
            "member_id": [f"u{i}" for i in rng.integers(0, 60, n)],
            "item_id": [f"x{i}" for i in rng.integers(0, 90, n)],
            "timestamp": rng.random(n) * 1e6,
            "label": (rng.random(n) < 0.8).astype(int),  # negatives too
        }
    )
    model = NetworkInteractionModel({"n_estimators": 20})
    enc = encode(df)
    model.fit(enc.frame, len(enc.members), len(enc.items))
    s = model.score(np.array([0, 1, 2]))
    assert s.shape == (3, len(enc.items)) and np.isfinite(s).all()
    out = evaluate_interactions(NetworkInteractionModel({"n_estimators": 20}), df)
    assert 0.0 <= out["model"]["hr@10"] <= 1.0


def test_large_catalogue_scores_a_pool_and_ranks_the_rest_below() -> None:
    rng = np.random.default_rng(1)
    n = 600
    df = pd.DataFrame(
        {
            "member": rng.integers(0, 50, n),
            "item": rng.integers(0, 300, n),
            "timestamp": rng.random(n) * 1e5,
            "label": np.ones(n, dtype=int),
        }
    )
    model = NetworkInteractionModel({"n_estimators": 20, "pool_size": 40}).fit(df, 50, 300)
    s = model.score(np.arange(5))
    assert s.shape == (5, 300) and np.isfinite(s).all()
    counts = np.bincount(df["item"], minlength=300)
    top_popular = np.argsort(-counts, kind="stable")[:40]
    never = np.flatnonzero(counts == 0)  # outside every pool: not popular, nobody's history or neighbour
    assert len(never) > 0
    assert s[:, top_popular].min() > s[:, never].max()
