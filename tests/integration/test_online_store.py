"""The fast online paths agree with Feast: rows written in Feast's layout read the same through the SDK
and through the fast reader, missing rows included, and the offline evaluations' replay of the rows
reads the same frame."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pandas as pd

from evaluation.feature_replay import stored_for
from features.families import recompute, stored_rows
from features.store import SERVING_FEATURES, FastOnlineReader, OnlineReader, OnlineWriter, feature_store
from services.traffic import SimulatedTraffic

from .conftest import isolated_settings


def test_fast_reader_equals_feast_sdk(base_settings, tmp_path):
    s = isolated_settings(base_settings, tmp_path)
    store = feature_store(s)
    table = recompute(SimulatedTraffic(members=300, requests=200, seed=4).events())
    OnlineWriter(store, s).write(stored_rows(table.keys(), table), time.time())
    # The busiest member's candidates with history (its member_actor_type rows), and some without.
    member = Counter(k.split("|")[1] for k in table if k.startswith("member_item|")).most_common(1)[0][0]
    seen = [k.split("|")[2:] for k in table if k.startswith(f"member_actor_type|{member}|")]
    items = [k.split("|")[2] for k in table if k.startswith(f"member_item|{member}|")]
    cands = [(item, t, actor) for item, (actor, t) in zip(items, seen, strict=False)]
    cands += [("p-unknown", "job", "co-unknown"), ("m5", "member", "m5")]
    assert len(cands) >= 4
    fast = FastOnlineReader(store, s).read(member, cands)
    sdk = OnlineReader(store).read(member, cands)
    cols = [f.replace(":", "__") for f in SERVING_FEATURES]
    assert list(fast.columns) == cols
    np.testing.assert_allclose(
        fast[cols].to_numpy(float), pd.DataFrame(sdk[cols]).astype(float).to_numpy(), rtol=1e-12, equal_nan=True
    )
    assert fast["member_stats__imp_total"].notna().all()  # m1's own row is there for every candidate
    assert np.isnan(fast["item_stats__imp_total"].iloc[-2])  # an unknown item reads as missing
    assert fast["member_item__imp_total"].iloc[0] > 0
    # The served log and the feed evaluation read the replayed rows as serving reads Redis.
    frame = pd.DataFrame(cands, columns=["item_id", "item_type", "actor_id"])
    pd.testing.assert_frame_equal(stored_for(table, member, frame), fast, rtol=1e-12)
    # The mixer's read: only the served columns, the same values
    served = FastOnlineReader(store, s).read_columns(member, cands)
    assert set(served) < set(cols) and "member_item__hide_total" in served and "item_stats__imp_total" not in served
    for name, values in served.items():
        np.testing.assert_allclose(values, fast[name].to_numpy(float), rtol=1e-12, equal_nan=True, err_msg=name)


def test_feast_cli_apply_registers_every_family(base_settings, tmp_path):
    """`feast apply` from the repository (a copy with its own registry and project) finds every view."""
    import re
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from features.families import VIEWS
    from feedrank.settings import REPO_ROOT

    repo = tmp_path / "feature_repo"
    shutil.copytree(REPO_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    yaml = (repo / "feature_store.yaml").read_text()
    yaml = yaml.replace("project: feedrank", "project: cli_test")
    yaml = re.sub(r"registry: .*", f"registry: {tmp_path / 'registry.db'}", yaml)
    (repo / "feature_store.yaml").write_text(yaml)
    feast = str(Path(sys.executable).parent / "feast")
    out = subprocess.run([feast, "apply"], cwd=repo, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    listed = subprocess.run([feast, "feature-views", "list"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert {v.name for v in VIEWS} <= set(re.findall(r"^(\w+)\s", listed.stdout, flags=re.M))


def test_shared_rows_serve_item_and_actor_stats_until_they_age_out(base_settings, tmp_path):
    """The mixer's cache of member-independent rows: the same values as Redis's, fewer keys read, and
    a row written since is seen once the cached generation is older than its TTL."""
    from features.redis_layout import SharedRows

    s = isolated_settings(base_settings, tmp_path)
    store = feature_store(s)
    table = recompute(SimulatedTraffic(members=200, requests=150, seed=5).events())
    writer = OnlineWriter(store, s)
    writer.write(stored_rows(table.keys(), table), time.time())
    items = sorted({tuple(k.split("|")[1:]) for k in table if k.startswith("member_actor_type|")})[:30]
    cands = [(f"i{j}", t, a) for j, (_, a, t) in enumerate(items)]
    item_ids = [k.split("|")[1] for k in table if k.startswith("item_stats|")]
    cands = [(item_ids[j % len(item_ids)], t, a) for j, (_, t, a) in enumerate(cands)]
    member = items[0][0]
    layout = FastOnlineReader(store, s)._layout
    now = [0.0]
    shared = SharedRows(ttl_s=0.25, clock=lambda: now[0])
    plain = layout.read_columns(member, cands, served_only=True)
    first = layout.read_columns(member, cands, served_only=True, shared=shared)
    assert shared.hits == 0 and shared.misses > 0
    misses = shared.misses
    second = layout.read_columns(member, cands, served_only=True, shared=shared)
    assert shared.misses == misses and shared.hits == misses  # every item and actor row came from memory
    for name in plain:
        np.testing.assert_array_equal(first[name], plain[name], err_msg=name)
        np.testing.assert_array_equal(second[name], plain[name], err_msg=name)
    # Another member with the same candidates: member-keyed views are read, shared ones are not.
    other = layout.read_columns(items[-1][0], cands, served_only=True, shared=shared)
    assert shared.misses == misses
    np.testing.assert_array_equal(other["item_stats__eng_1d"], plain["item_stats__eng_1d"])

    item = cands[0][0]
    rows = stored_rows([f"item_stats|{item}"], {f"item_stats|{item}": {**table[f"item_stats|{item}"]}})
    for view_rows in rows.values():
        for r in view_rows:
            r["eng_1d"] = 987.0
    writer.write(rows, time.time())
    now[0] = 0.2  # within the TTL: the cached row
    assert layout.read_columns(member, cands, served_only=True, shared=shared)["item_stats__eng_1d"][0] != 987.0
    now[0] = 0.3  # the generation aged out: Redis's row
    assert layout.read_columns(member, cands, served_only=True, shared=shared)["item_stats__eng_1d"][0] == 987.0
