"""The simulated world keeps its promises: graph statistics, click-through rates, determinism,
exact propensities, privacy of what is shown, and clear errors for bad parameters."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from simulator.config import SessionConfig, SimulationConfigError, WorldConfig
from simulator.logs import LogFormatError, read_log, write_csv
from simulator.policies import EpsilonGreedy, UniformRandom
from simulator.run import simulate_to_files
from simulator.session import Simulation
from simulator.truth import GroundTruth, expected_clicks, ndcg_against_oracle, oracle_order, oracle_ratio
from simulator.world import ITEM_TYPE_NAMES, build_world


@pytest.fixture(scope="module")
def world():
    return build_world(WorldConfig(n_members=20_000, seed=3))


@pytest.fixture(scope="module")
def log(world):
    sim = Simulation(world, SessionConfig(n_requests=30_000, seed=1))
    list(sim.world_events())
    return pa.concat_tables([lg for _, lg in sim.sessions()]).to_pandas()


def clustering(w, sample=1500, seed=0) -> float:
    rng = np.random.default_rng(seed)
    g, deg = w.graph, w.graph.degree()
    out = []
    for u in rng.choice(np.flatnonzero(deg >= 2), sample):
        nb = g.indices[g.indptr[u] : g.indptr[u + 1]]
        nb = rng.choice(nb, min(len(nb), 150), replace=False)
        a, b = np.repeat(nb, len(nb)), np.tile(nb, len(nb))
        out.append(w.connected(a[a < b], b[a < b]).mean())
    return float(np.mean(out))


def hill_tail_exponent(deg: np.ndarray, frac: float = 0.05) -> float:
    x = np.sort(deg)[::-1]
    k = int(len(x) * frac)
    return k / float(np.sum(np.log(x[:k] / x[k])))


def test_degree_distribution_is_heavy_tailed_with_configured_mean(world):
    deg = world.graph.degree()
    assert 0.85 * 20 <= deg.mean() <= 1.15 * 20
    assert deg.max() >= 20 * deg.mean()  # hubs exist
    # The CCDF tail exponent of a degree power law with gamma = 2.5 is gamma - 1 = 1.5.
    assert 1.2 <= hill_tail_exponent(deg) <= 1.9
    assert (deg == 0).mean() < 0.05


def test_homophily_and_its_absence():
    def same_industry(h: float) -> tuple[float, float]:
        w = build_world(WorldConfig(n_members=10_000, seed=4, homophily=h))
        shares = np.bincount(w.industry) / w.n_members
        return float((w.industry[w.edges[:, 0]] == w.industry[w.edges[:, 1]]).mean()), float((shares**2).sum())

    high, baseline = same_industry(0.7)
    none, _ = same_industry(0.0)
    assert 0.55 <= high <= 0.8 and high > 4 * baseline
    assert abs(none - baseline) < 0.03


def test_triadic_closure_raises_clustering():
    closed = clustering(build_world(WorldConfig(n_members=10_000, seed=5, triadic_closure=0.3)))
    open_ = clustering(build_world(WorldConfig(n_members=10_000, seed=5, triadic_closure=0.0)))
    assert closed > 1.3 * open_


def test_follows_and_blocks_exist(world):
    assert len(world.follows_company) > world.n_members and len(world.follows_member) > 0
    assert len(world.blocks) == pytest.approx(0.01 * world.n_members, rel=0.2)
    influencers = np.unique(world.follows_member[:, 1])
    assert world.graph.degree()[influencers].mean() > 5 * world.graph.degree().mean()


def test_ctr_by_position_follows_position_bias(log):
    ctr = log.groupby("position")["clicked"].mean()
    assert all(ctr.iloc[i] > ctr.iloc[i + 1] for i in range(4))
    assert 3.0 <= ctr.iloc[0] / ctr.iloc[9] <= 8.0  # examination 1 vs 10^-0.7 = 0.2


def test_ctr_by_type_in_stated_ranges(log):
    ctr = log.groupby("item_type")["clicked"].mean()
    ranges = {"post": (0.07, 0.18), "job": (0.03, 0.08), "course": (0.015, 0.05), "member": (0.05, 0.11)}
    for t, (lo, hi) in ranges.items():
        assert lo <= ctr[t] <= hi, (t, ctr[t])
    # Behaviour follows the truth: observed clicks match the exported true_p within sampling error.
    se = np.sqrt((log["true_p"] * (1 - log["true_p"])).sum())
    assert abs(log["clicked"].sum() - log["true_p"].sum()) < 4 * se


def test_follow_up_actions_only_after_clicks_and_by_type(log):
    assert not (log["liked"] & ~log["clicked"]).any()
    assert not (log["hidden"] & log["clicked"]).any()
    assert not log.loc[log["item_type"] != "job", "applied"].any()
    assert log.loc[log["item_type"] == "job", "applied"].any()


def test_nothing_shown_that_the_member_may_not_see(world, log):
    names = {n: i for i, n in enumerate(f"m{i}" for i in range(world.n_members))}
    item_index = {}
    o = world.item_offsets
    for prefix, start, end in (("p", o[0], o[1]), ("j", o[1], o[2]), ("c", o[2], o[3])):
        item_index.update({f"{prefix}{k}": start + k for k in range(end - start)})
    item_index.update({f"m{k}": o[3] + k for k in range(world.n_members)})
    member = log["member_id"].map(names).to_numpy()
    item = log["item_id"].map(item_index).to_numpy()
    actor = world.item_actor[item]
    assert not world.blocked(member, actor).any()
    conn_only = world.item_connections_only[item]
    assert conn_only.any() and world.connected(member[conn_only], actor[conn_only]).all()
    people = world.item_type[item] == 3
    assert not world.connected(member[people], actor[people]).any() and (member[people] != actor[people]).all()
    assert not log.duplicated(["request_id", "item_id"]).any()


@pytest.mark.parametrize("policy", [UniformRandom(), EpsilonGreedy(epsilon=0.3)])
def test_logged_propensities_are_exact(policy):
    rng = np.random.default_rng(0)
    n_cand, slate, draws = 8, 4, 40_000
    valid = np.ones((draws, n_cand), dtype=bool)
    valid[:, 5] = False  # an invalid candidate is never shown
    scores = np.tile(np.linspace(1.0, 0.0, n_cand), (draws, 1))
    chosen, prop = policy.choose(scores, valid, slate, rng)
    assert not (chosen == 5).any()
    for k in range(slate):
        for c in range(n_cand):
            shown = chosen[:, k] == c
            emp = shown.mean()
            logged = prop[shown, k].mean() if shown.any() else 0.0
            assert np.allclose(prop[shown, k], logged)  # one propensity per (item, position)
            tol = 4 * np.sqrt(max(logged, 1e-3) * (1 - logged) / draws)
            assert abs(emp - logged) <= tol, (policy.name, k, c, emp, logged)


def test_epsilon_greedy_simulation_logs_greedy_propensity(world):
    truth = GroundTruth(world)
    sim = Simulation(
        world,
        SessionConfig(n_requests=2000, policy="epsilon-greedy", epsilon=0.2, seed=2),
        truth,
        scorer=lambda m, i, t: truth.relevance(m, i, t),
    )
    log = pa.concat_tables([lg for _, lg in sim.sessions()]).to_pandas()
    assert log["propensity"].max() > 0.8 and log["propensity"].min() < 0.05


def test_oracle_ranks_by_relevance(world):
    truth = GroundTruth(world)
    rng = np.random.default_rng(1)
    member = np.full(50, 7)
    items = rng.integers(0, len(world.item_type), 50)
    rel = truth.relevance(member, items, np.full(50, world.config.start_time))
    order = oracle_order(rel)
    assert np.all(np.diff(rel[order]) <= 0)
    exam = truth.examination(np.arange(10))
    random_order = rng.permutation(50)
    assert expected_clicks(rel, order, exam) >= expected_clicks(rel, random_order, exam)
    assert oracle_ratio(rel, order, exam) == pytest.approx(1.0)
    assert 0 < oracle_ratio(rel, random_order, exam) < 1
    assert ndcg_against_oracle(rel, order, 10) == pytest.approx(1.0)
    assert ndcg_against_oracle(rel, order[::-1], 10) < ndcg_against_oracle(rel, random_order, 10) < 1


def test_same_seed_same_world_and_traffic(tmp_path):
    def run(seed: int, out):
        simulate_to_files(
            WorldConfig(n_members=500, seed=seed), SessionConfig(n_requests=600, seed=seed), out, show_progress=False
        )
        return pa.parquet.read_table(out / "events.parquet"), pa.parquet.read_table(out / "impressions.parquet")

    import pyarrow.parquet  # noqa: F401

    a, b, c = run(1, tmp_path / "a"), run(1, tmp_path / "b"), run(2, tmp_path / "c")
    assert a[0].equals(b[0]) and a[1].equals(b[1])
    assert not a[1].equals(c[1])


def test_events_are_valid_member_events(tmp_path):
    from feedrank.contracts import MemberEvent
    from simulator.session import events_to_member_events

    sim = Simulation(build_world(WorldConfig(n_members=300, seed=1)), SessionConfig(n_requests=300))
    tables = list(sim.world_events()) + [ev for ev, _ in sim.sessions()]
    events = [e for t in tables for e in events_to_member_events(t)]
    assert all(isinstance(e, MemberEvent) for e in events)
    types = {e.event_type.value for e in events}
    assert {"member_joined", "connection_made", "post_created", "job_posted", "impression", "click"} <= types
    ts = [e.timestamp for e in events if e.event_type.value == "impression"]
    assert ts == sorted(ts)
    # events given the same fields share one record of them (``share_fields_set``)
    assert len({id(e.model_fields_set) for e in events if e.event_type.value == "impression"}) == 1
    # names that repeat are one string each, across the tables too
    by_member: dict[str, list[str]] = {}
    for e in events:
        by_member.setdefault(e.member_id, []).append(e.member_id)
    assert max(map(len, by_member.values())) > 1
    assert all(all(s is names[0] for s in names) for names in by_member.values())
    requests = {}
    for e in events:
        if (rid := e.attributes.get("request_id")) is not None:
            assert requests.setdefault(rid, rid) is rid


def test_log_reads_as_parquet_and_csv(tmp_path, log):
    table = pa.Table.from_pandas(log.head(500), preserve_index=False)
    write_csv(table, tmp_path / "log.csv")
    back = read_log(tmp_path / "log.csv")
    assert list(back.columns) == list(log.columns)
    np.testing.assert_allclose(back["propensity"], log.head(500)["propensity"])
    assert back["clicked"].tolist() == log.head(500)["clicked"].astype(int).tolist()
    (tmp_path / "bad.csv").write_text("request_id,item_id\nr1,i1\n")
    with pytest.raises(LogFormatError, match="position"):
        read_log(tmp_path / "bad.csv")


@pytest.mark.parametrize(
    ("kind", "values", "needle"),
    [
        ("world", {"n_members": 0}, "world.n_members"),
        ("world", {"homophily": 1.5}, "world.homophily"),
        ("world", {"degree_exponent": 1.5}, "world.degree_exponent"),
        ("world", {"bogus": 1}, "world.bogus"),
        ("world", {"n_members": 100, "mean_degree": 500}, "mean_degree"),
        ("sessions", {"slate_size": 0}, "sessions.slate_size"),
        ("sessions", {"epsilon": -0.1}, "sessions.epsilon"),
        (
            "sessions",
            {
                "slate_size": 50,
                "network_candidates": 5,
                "job_candidates": 5,
                "course_candidates": 5,
                "people_candidates": 5,
            },
            "slate_size",
        ),
    ],
)
def test_invalid_configuration_names_the_parameter(kind, values, needle):
    cls = WorldConfig if kind == "world" else SessionConfig
    with pytest.raises(SimulationConfigError, match=needle.replace(".", r"\.")):
        cls.build(kind, **values)


def test_cli_rejects_bad_parameter(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "feedrank.cli", "simulate", "--members", "5", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "world.n_members" in out.stderr


def test_cli_writes_log_and_events(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "feedrank.cli",
            "simulate",
            "--members",
            "400",
            "--requests",
            "300",
            "--format",
            "csv",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    log = read_log(tmp_path / "impressions.csv")
    assert len(log) == 3000 and set(ITEM_TYPE_NAMES) >= set(log["item_type"])
    assert (tmp_path / "events.parquet").exists() and (tmp_path / "manifest.json").exists()


def test_read_log_keeps_csv_ids_as_strings_and_names_bad_rows(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("request_id,position,item_id,clicked,propensity\n007,0,0042,1,0.5\n008,1,9,0,1.0\n")
    df = read_log(path)
    assert df["request_id"].tolist() == ["007", "008"] and df["item_id"].tolist() == ["0042", "9"]
    assert df["clicked"].tolist() == [1, 0]
    path.write_text("request_id,position,item_id,clicked,propensity\nr1,0,a,1,0.5\nr1,1,b,0.5,0.5\nr2,0,c,2,1\n")
    with pytest.raises(
        LogFormatError, match=r"'clicked' must be 0/1 or true/false; it is not in 2 row\(s\) \(rows 1, 2\)"
    ):
        read_log(path)
    path.write_text("request_id,position,item_id,clicked,propensity\nr1,0,a,1,0\nr1,1,b,0,1.5\nr2,0,c,0,1\n")
    with pytest.raises(LogFormatError, match=r"propensity outside \(0, 1\] in 2 row\(s\) \(rows 0, 1\)"):
        read_log(path)
    with pytest.raises(LogFormatError, match=r"lacks column\(s\) \['true_p'\]"):
        read_log(path, columns=["clicked", "true_p"])
