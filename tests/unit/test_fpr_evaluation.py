"""The offline FPR protocols: leave-last-out on interactions and held-out edges, on cases with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.interactions import (
    AdamicAdar,
    InteractionFileError,
    encode,
    encode_edges,
    evaluate_edges,
    evaluate_interactions,
    leave_last_out,
    read_edges,
    read_interactions,
)


class Cheat:
    """Knows the held-out items (to check that a perfect ranking scores 1)."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df

    def fit(self, interactions: pd.DataFrame, n_members: int, n_items: int) -> Cheat:
        enc = encode(self.df)
        _, test = leave_last_out(enc.frame)
        self.target = dict(zip(test["member"], test["item"], strict=True))
        self.n_items = n_items
        return self

    def score(self, members: np.ndarray) -> np.ndarray:
        s = np.zeros((len(members), self.n_items))
        for r, m in enumerate(members):
            s[r, self.target[m]] = 1.0
        return s


class Constant:
    def fit(self, interactions: pd.DataFrame, n_members: int, n_items: int) -> Constant:
        self.n_items = n_items
        return self

    def score(self, members: np.ndarray) -> np.ndarray:
        return np.zeros((len(members), self.n_items))


def random_interactions(n_members: int = 200, n_items: int = 300, per_member: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(f"m{m}", f"i{rng.integers(n_items)}", float(t)) for m in range(n_members) for t in range(per_member)]
    return pd.DataFrame(rows, columns=["member_id", "item_id", "timestamp"])


def test_leave_last_out_holds_out_the_latest_and_breaks_ties_by_file_order():
    df = pd.DataFrame(
        {
            "member_id": ["a", "a", "a", "b", "b"],
            "item_id": ["x", "y", "z", "x", "y"],
            "timestamp": [3.0, 5.0, 5.0, 1.0, 0.5],
        }
    )
    enc = encode(df)
    train, test = leave_last_out(enc.frame)
    held = {enc.members[m]: enc.items[i] for m, i in zip(test["member"], test["item"], strict=True)}
    assert held == {"a": "z", "b": "x"}  # a: tie at 5.0 -> the later row; b: by timestamp, not file order
    assert len(train) == 3


def test_negative_labels_are_never_held_out():
    df = pd.DataFrame({"member_id": ["a", "a"], "item_id": ["x", "y"], "timestamp": [1.0, 2.0], "label": [1, 0]})
    enc = encode(df)
    _, test = leave_last_out(enc.frame)
    assert [enc.items[i] for i in test["item"]] == ["x"]


def test_perfect_model_scores_one_and_constant_model_scores_like_chance():
    df = random_interactions()
    perfect = evaluate_interactions(Cheat(df), df)
    assert perfect["model"] == {"hr@10": 1.0, "ndcg@10": 1.0}
    constant = evaluate_interactions(Constant(), df)
    # about 10 of ~296 ranked items: random tie-breaking, not a free win for a constant model
    assert constant["model"]["hr@10"] < 0.1


def test_popularity_baseline_finds_the_popular_item():
    # members 0-24 engage "hit" and then a rare item; members 25-49 a rare item and then "hit"
    rows = [(f"m{m}", "hit", float(m if m < 25 else m + 1)) for m in range(50)]
    rows += [(f"m{m}", f"rare{m}", float(m + 0.5)) for m in range(50)]
    df = pd.DataFrame(rows, columns=["member_id", "item_id", "timestamp"])
    out = evaluate_interactions(Constant(), df)
    # "hit" is the only item with training interactions: ranked first for the 25 members holding it out
    assert 0.5 <= out["popularity"]["hr@10"] < 1.0
    assert out["popularity"]["ndcg@10"] >= 0.5
    assert out["model"]["hr@10"] < out["popularity"]["hr@10"]


def test_adamic_adar_matches_its_definition():
    edges = np.array([[0, 1], [0, 2], [1, 3], [2, 3], [3, 4]])
    aa = AdamicAdar().fit(edges, 5).score(np.array([0]))[0]
    # 0 and 3 share neighbours 1 (degree 2) and 2 (degree 2)
    assert aa[3] == pytest.approx(2 / np.log(2))
    assert aa[4] == 0.0


def test_edge_protocol_rewards_a_model_that_knows_the_graph():
    rng = np.random.default_rng(1)
    # two dense communities: held-out edges are predictable from common neighbours
    pairs = [(a, b) for c in (0, 30) for a in range(c, c + 30) for b in range(a + 1, c + 30) if rng.random() < 0.3]
    df = pd.DataFrame({"member_a": [f"m{a}" for a, _ in pairs], "member_b": [f"m{b}" for _, b in pairs]})
    out = evaluate_edges(AdamicAdar(), df, holdout=0.2)
    assert out["model"] == out["adamic_adar"]
    assert out["adamic_adar"]["recall@10"] > 0.3
    random_model = type(
        "R",
        (),
        {
            "fit": lambda self, e, n: setattr(self, "n", n) or self,
            "score": lambda self, nodes: np.random.default_rng(0).random((len(nodes), self.n)),
        },
    )()
    worse = evaluate_edges(random_model, df, holdout=0.2)
    assert worse["model"]["recall@10"] < out["adamic_adar"]["recall@10"]


def test_encode_edges_drops_self_loops_and_duplicates():
    df = pd.DataFrame({"member_a": ["a", "b", "a", "c"], "member_b": ["b", "a", "a", "a"]})
    pairs, nodes = encode_edges(df)
    assert len(pairs) == 2 and set(nodes) == {"a", "b", "c"}


def test_bad_files_get_errors_naming_the_problem(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("member_id,item\nm1,i1\n")
    with pytest.raises(InteractionFileError, match=r"lacks column\(s\) \['item_id', 'timestamp'\]"):
        read_interactions(p)
    p.write_text("member_id,item_id,timestamp\nm1,i1,yesterday\nm2,i2,3\n")
    with pytest.raises(InteractionFileError, match=r"non-numeric timestamp in row\(s\) \[0\]"):
        read_interactions(p)
    with pytest.raises(InteractionFileError, match="does not exist"):
        read_interactions(tmp_path / "missing.csv")
    e = tmp_path / "e.csv"
    e.write_text("a,b\n1,2\n")
    with pytest.raises(InteractionFileError, match="member_a"):
        read_edges(e)
