"""``feedrank fpr evaluate`` on files: the JSON contract, and clear errors for bad files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from feedrank.cli import main


def clustered_clicks(path, n_members: int = 120, n_items: int = 60, per_member: int = 6, seed: int = 0) -> None:
    """Members of a cluster click that cluster's items: learnable beyond popularity."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(n_members):
        cluster = m % 4
        items = rng.choice(np.arange(cluster, n_items, 4), per_member, replace=False)
        rows += [(f"m{m}", f"c{i}", float(t)) for t, i in enumerate(items)]
    pd.DataFrame(rows, columns=["member_id", "item_id", "timestamp"]).to_csv(path, index=False)


def test_evaluate_interactions_prints_model_and_popularity_json(tmp_path, capsys):
    f = tmp_path / "clicks.csv"
    clustered_clicks(f)
    assert main(["fpr", "evaluate", "courses", "--interactions", str(f), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"model", "popularity"}
    for name in out:
        assert set(out[name]) == {"hr@10", "ndcg@10"}
        assert 0.0 <= out[name]["ndcg@10"] <= out[name]["hr@10"] <= 1.0


def test_evaluate_edges_prints_model_and_adamic_adar(tmp_path, capsys):
    rng = np.random.default_rng(2)
    pairs = [(a, b) for a in range(80) for b in range(a + 1, 80) if (a % 2 == b % 2) and rng.random() < 0.15]
    f = tmp_path / "edges.csv"
    pd.DataFrame({"member_a": [f"m{a}" for a, _ in pairs], "member_b": [f"m{b}" for _, b in pairs]}).to_csv(f)
    assert main(["fpr", "evaluate", "people", "--edges", str(f), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"model", "adamic_adar"} and set(out["model"]) == {"recall@10", "ndcg@10"}


def test_bad_files_and_names_fail_with_a_message(tmp_path, capsys):
    f = tmp_path / "bad.csv"
    f.write_text("member_id,item_id\nm1,i1\n")
    assert main(["fpr", "evaluate", "courses", "--interactions", str(f)]) == 2
    assert "lacks column(s) ['timestamp']" in capsys.readouterr().err
    assert main(["fpr", "evaluate", "nope", "--interactions", str(f)]) == 2
    assert "unknown FPR 'nope'" in capsys.readouterr().err
    assert main(["fpr", "evaluate", "courses"]) == 2
    assert "exactly one of" in capsys.readouterr().err


@pytest.mark.parametrize("until", ["0", "1.5", "-0.2", "half"])
def test_train_fpr_rejects_a_bad_until_before_loading_any_traffic(tmp_path, capsys, until):
    missing = tmp_path / "no-such-folder"  # loading it would fail with another message
    with pytest.raises(SystemExit) as exit_:
        main(["train", "fpr", "courses", "--data", str(missing), "--until", until])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--until" in err and ("(0, 1]" in err or "not a number" in err)
    assert "no-such-folder" not in err
