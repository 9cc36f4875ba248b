"""Unit tests of the people FPR: the exclusion rules, scores, cold start, training and the edge model.

One small simulated world is trained once per module (a few seconds); everything else is hand-built.
"""

from __future__ import annotations

import io
import itertools

import joblib
import numpy as np
import pandas as pd
import pytest

from evaluation.fpr_oracle import SimulatedWorld, oracle_eval, simulate
from evaluation.interactions import evaluate_edges
from feedrank.contracts import EventType, ItemType, MemberEvent
from rankers.baselines import CommonNeighboursScorer
from rankers.inventory import Inventory
from rankers.people.line import train_line, unit
from rankers.people.offline import PeopleEdgeModel
from rankers.people.ranker import PeopleScorer, build
from rankers.people.settings import load_settings
from rankers.people.train import train
from rankers.training import NoProgress, TrainedFpr

NOW = 1_767_225_600.0
_ids = itertools.count()


def ev(event_type: EventType, member_id: str, item_id: str | None = None, **kw) -> MemberEvent:
    item_type = ItemType.MEMBER if item_id is not None else None
    return MemberEvent(
        event_id=f"t{next(_ids)}",
        event_type=event_type,
        member_id=member_id,
        timestamp=kw.pop("ts", NOW - 3600),
        item_id=item_id,
        item_type=item_type,
        **kw,
    )


def small_graph() -> Inventory:
    """m1's friends m2, m3; two-hop m4 (two paths), m5, m6 (blocked by m1), m7 (blocked m1);
    m8 shares m1's company; m9 knows nobody."""
    inv = Inventory()
    for m in [f"m{i}" for i in range(1, 10)]:
        inv.apply(ev(EventType.MEMBER_JOINED, m, attributes={"skills": ["python"], "industry": "tech"}))
    for a, b in [("m1", "m2"), ("m1", "m3"), ("m2", "m4"), ("m3", "m4"), ("m2", "m5"), ("m3", "m6"), ("m2", "m7")]:
        inv.apply(ev(EventType.CONNECTION_MADE, a, b))
    inv.apply(ev(EventType.BLOCK, "m1", "m6"))
    inv.apply(ev(EventType.BLOCK, "m7", "m1"))
    inv.apply(ev(EventType.FOLLOW, "m1", "co1"))
    inv.apply(ev(EventType.FOLLOW, "m8", "co1"))
    return inv


@pytest.fixture(scope="module")
def world() -> SimulatedWorld:
    return simulate(members=400, requests=4000, days=3, seed=1)


@pytest.fixture(scope="module")
def trained(world: SimulatedWorld) -> TrainedFpr:
    return train(world.traffic, {"epochs": 15}, NoProgress())


def final_inventory(sw: SimulatedWorld) -> Inventory:
    inv = Inventory()
    for e in sw.traffic.events:
        inv.apply(e)
    return inv


def test_baseline_ranker_excludes_self_connections_and_blocks_both_ways():
    ids = [c.item_id for c in build().top_k(small_graph(), "m1", NOW)]
    assert ids[0] == "m4"  # two common connections
    assert set(ids) == {"m4", "m5", "m8"}  # m6 blocked by m1, m7 blocked m1; m8 via the common company


def test_trained_ranker_respects_connections_and_blocks_made_after_training(world, trained):
    inv = final_inventory(world)
    ranker = build(model=trained.scorer)
    member = max(inv.connections, key=lambda m: len(inv.connections[m]))
    before = [c.item_id for c in ranker.top_k(inv, member, inv.latest, k=100)]
    assert before and member not in before and not set(before) & inv.connections[member]
    # A LINE neighbour connected after training must go too, as must anyone blocked either way.
    line_ids = trained.scorer.embeddings.similar(member, 50)
    new_friend = next(c for c in line_ids if c in before)
    blocked_by_member, blocker = before[0], before[-1]
    inv.apply(ev(EventType.CONNECTION_MADE, member, new_friend, ts=inv.latest + 1))
    inv.apply(ev(EventType.BLOCK, member, blocked_by_member, ts=inv.latest + 1))
    inv.apply(ev(EventType.BLOCK, blocker, member, ts=inv.latest + 1))
    after = [c.item_id for c in ranker.top_k(inv, member, inv.latest, k=1000)]
    assert after
    for gone in (member, new_friend, blocked_by_member, blocker):
        assert gone not in after
    assert not set(after) & inv.connections[member]
    assert not any(inv.is_blocked(member, c) for c in after)


def test_scores_are_probabilities_and_features_align(world, trained):
    inv = final_inventory(world)
    ids = [*list(inv.members)[:50], "m-unknown"]
    p, feats = trained.scorer.score(inv, "m3", ids, inv.latest)
    assert p.shape == (len(ids),) and np.all((p >= 0) & (p <= 1))
    assert all(len(v) == len(ids) for v in feats.values())
    empty, _ = trained.scorer.score(inv, "m3", [], inv.latest)
    assert len(empty) == 0


def test_unknown_member_gets_a_cold_start_list(world, trained):
    inv = final_inventory(world)
    for ranker in (build(), build(model=trained.scorer)):
        out = ranker.top_k(inv, "m-nobody", inv.latest)
        assert out and "m-nobody" not in [c.item_id for c in out]
        assert all(0.0 <= c.score <= 1.0 and c.item_type == ItemType.MEMBER for c in out)
    assert build().top_k(small_graph(), "m9", NOW)  # known, but no connections or follows


def test_trained_scorer_pickles_and_beats_common_neighbours(world, trained):
    buf = io.BytesIO()
    joblib.dump(trained.scorer, buf)
    buf.seek(0)
    scorer = joblib.load(buf)
    assert isinstance(scorer, PeopleScorer) and scorer.version
    assert {"auc", "log_loss", "o_over_e"} <= set(trained.metrics)
    assert trained.metrics["auc"] > 0.6
    out = oracle_eval(
        world, lambda t, p, g: train(t, p, g), lambda m: build(model=m), CommonNeighboursScorer(),
        params={"epochs": 15}, n_requests=150,
    )  # fmt: skip
    assert out["model"]["ndcg@10"] > out["baseline"]["ndcg@10"] + 0.1


def test_line_first_order_is_higher_for_connected_pairs(world):
    edges = world.world.edges
    n = world.world.n_members
    emb = train_line(edges, n, dim=16, epochs=10, seed=3)
    first = unit(emb.first)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, n, 2000), rng.integers(0, n, 2000)
    connected = np.einsum("ij,ij->i", first[edges[:, 0]], first[edges[:, 1]]).mean()
    random = np.einsum("ij,ij->i", first[a], first[b]).mean()
    assert connected > random + 0.2
    assert len(emb.losses) == 10 and emb.losses[-1] < emb.losses[0]


def test_edge_model_beats_adamic_adar(world):
    e = world.world.edges
    df = pd.DataFrame({"member_a": [f"m{a}" for a in e[:, 0]], "member_b": [f"m{b}" for b in e[:, 1]]})
    out = evaluate_edges(PeopleEdgeModel(), df)
    for metric in ("recall@10", "ndcg@10"):
        assert out["model"][metric] > out["adamic_adar"][metric]


def test_settings_overrides():
    assert load_settings({"epochs": 3})["line"]["epochs"] == 3
    assert load_settings({"line.dim": 4})["line"]["dim"] == 4
    assert load_settings({"candidates": {"friends_of_friends": 7}})["candidates"]["friends_of_friends"] == 7
    with pytest.raises(TypeError):
        load_settings({"no_such_setting": 1})
    assert build(k=5, line_neighbours=0).k == 5
