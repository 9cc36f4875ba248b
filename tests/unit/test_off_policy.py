"""Off-policy estimators recover values known exactly: hand-computed logs, synthetic logs with known
rewards, and the simulator's ground truth under a uniform logging policy; bad tables and logs fail
with errors naming the rows."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from evaluation.off_policy import cluster_bootstrap, effective_sample_size, evaluate, importance_weights
from evaluation.policy_table import PolicyFormatError, join_policy, read_policy, validate_policy
from simulator.config import SessionConfig, WorldConfig
from simulator.logs import LogFormatError
from simulator.session import Simulation
from simulator.truth import GroundTruth, TruthParams
from simulator.world import build_world


# Each estimator written out from its textbook definition, row by row, independently of the ratio terms
# `evaluate` computes them from.
def logged_value(clicked: np.ndarray) -> float:
    return float(np.mean(clicked))


def replay_value(clicked: np.ndarray, probability: np.ndarray) -> tuple[float, int]:
    matched = np.asarray(probability) >= 1.0 - 1e-9
    return (float(np.mean(np.asarray(clicked)[matched])) if matched.any() else float("nan")), int(matched.sum())


def ips_value(clicked: np.ndarray, weights: np.ndarray) -> float:
    return float(np.mean(np.asarray(clicked) * weights))


def snips_value(clicked: np.ndarray, weights: np.ndarray) -> float:
    return float(np.sum(np.asarray(clicked) * weights) / np.sum(weights))


def dr_value(clicked: np.ndarray, weights: np.ndarray, reward_logged: np.ndarray, direct: np.ndarray) -> float:
    return float(np.mean(direct + weights * (np.asarray(clicked) - reward_logged)))


def policy_frame(request_id, position, item_id, probability, **extra) -> pd.DataFrame:
    return pd.DataFrame(
        {"request_id": request_id, "position": position, "item_id": item_id, "probability": probability, **extra}
    )


def tiny_log() -> pd.DataFrame:
    """Two requests of two slots, logged uniformly over 4 candidates (propensity 1/4)."""
    return pd.DataFrame(
        {
            "request_id": ["r1", "r1", "r2", "r2"],
            "position": [0, 1, 0, 1],
            "item_id": ["a", "b", "c", "d"],
            "clicked": [1, 0, 1, 1],
            "propensity": [0.25, 0.25, 0.25, 0.5],
        }
    )


# ---------------------------------------------------------------------------------------------- hand-computed
def test_estimators_on_a_hand_computed_log():
    log = tiny_log()
    policy = validate_policy(
        policy_frame(
            ["r1", "r1", "r2", "r2", "r2"],
            [0, 1, 0, 0, 1],
            ["a", "x", "c", "e", "d"],
            [1.0, 1.0, 0.5, 0.5, 1.0],
        )
    )
    j = join_policy(log, policy)
    np.testing.assert_array_equal(j.probability, [1.0, 0.0, 0.5, 1.0])
    w = importance_weights(j.probability, j.propensity)
    np.testing.assert_allclose(w, [4.0, 0.0, 2.0, 2.0])
    assert logged_value(j.clicked) == 0.75
    assert replay_value(j.clicked, j.probability) == (1.0, 2)  # rows 0 and 3 match, both clicked
    assert ips_value(j.clicked, w) == pytest.approx((4 + 0 + 2 + 2) / 4)
    assert snips_value(j.clicked, w) == pytest.approx(8 / 8)
    assert effective_sample_size(w) == pytest.approx(64 / 24)

    result = evaluate(j.clicked, j.propensity, j.probability, j.clusters, n_boot=50)
    doc = result.to_json()
    assert list(doc)[:4] == ["replay", "ips", "snips", "logged"]
    assert doc["replay"]["matched"] == 2
    assert doc["ips"]["value"] == pytest.approx(2.0)
    assert doc["rows"] == 4 and doc["requests"] == 2 and doc["max_weight"] == 4.0
    assert any("strictly between 0 and 1" in n for n in doc["notes"])  # row 2 has probability 0.5


def test_doubly_robust_on_a_hand_computed_log():
    log = tiny_log().assign(rhat=[0.5, 0.2, 0.4, 0.1])
    policy = validate_policy(
        policy_frame(["r1", "r1", "r2"], [0, 0, 1], ["a", "z", "d"], [0.5, 0.5, 1.0], rhat=[0.6, 0.2, 0.3]),
        reward="rhat",
    )
    j = join_policy(log, policy, reward="rhat")
    np.testing.assert_allclose(j.direct, [0.5 * 0.6 + 0.5 * 0.2, 0.0, 0.0, 0.3])
    w = importance_weights(j.probability, j.propensity)  # [2, 0, 0, 2]
    expected = np.mean([0.4 + 2 * (1 - 0.5), 0.0, 0.0, 0.3 + 2 * (1 - 0.1)])
    assert dr_value(j.clicked, w, j.reward_logged, j.direct) == pytest.approx(expected)
    result = evaluate(j.clicked, j.propensity, j.probability, j.clusters, j.reward_logged, j.direct, n_boot=20)
    assert result.estimates["dr"].value == pytest.approx(expected)
    assert j.uncovered_slots == 2  # r1 position 1 and r2 position 0 have no policy row


def test_evaluate_agrees_with_each_estimator():
    rng = np.random.default_rng(4)
    n = 5_000
    clicked = (rng.random(n) < 0.2).astype(float)
    propensity = rng.uniform(0.05, 1.0, n)
    probability = np.where(rng.random(n) < 0.3, 1.0, rng.random(n) * (rng.random(n) < 0.5))
    clusters = np.sort(rng.integers(0, 800, n))
    clusters = np.unique(clusters, return_inverse=True)[1]
    rhat, direct = rng.random(n) * 0.3, rng.random(n) * 0.3
    w = importance_weights(probability, propensity)
    result = evaluate(clicked, propensity, probability, clusters, rhat, direct, n_boot=100)
    e = result.estimates
    assert e["logged"].value == pytest.approx(logged_value(clicked))
    assert e["replay"].value == pytest.approx(replay_value(clicked, probability)[0])
    assert e["ips"].value == pytest.approx(ips_value(clicked, w))
    assert e["snips"].value == pytest.approx(snips_value(clicked, w))
    assert e["dr"].value == pytest.approx(dr_value(clicked, w, rhat, direct))
    for est in e.values():
        assert est.ci95[0] <= est.value <= est.ci95[1]


def test_replay_without_matches_is_undefined_not_zero():
    log = tiny_log()
    policy = validate_policy(policy_frame(["r1"], [0], ["b"], [1.0]))
    j = join_policy(log, policy)
    result = evaluate(j.clicked, j.propensity, j.probability, j.clusters, n_boot=20)
    doc = json.loads(json.dumps(result.to_json()))  # valid JSON: no NaN
    assert doc["replay"] == {"value": None, "ci95": [None, None], "matched": 0}
    assert any("replay is undefined" in n for n in doc["notes"])
    assert doc["ips"]["value"] == 0.0


# ---------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_resamples_requests_not_rows():
    """Ten identical rows per request carry one request's information: the clustered interval is the
    one of a single row per request, and a row-level bootstrap would be about sqrt(10) too narrow."""
    rng = np.random.default_rng(0)
    per_request = (rng.random(2_000) < 0.3).astype(float)
    rows = np.repeat(per_request, 10)
    clusters = np.repeat(np.arange(2_000), 10)
    clustered = cluster_bootstrap(clusters, [rows], [None], n_boot=300, seed=1)
    single = cluster_bootstrap(np.arange(2_000), [per_request], [np.ones(2_000)], n_boot=300, seed=1)
    np.testing.assert_allclose(clustered, single)
    naive = cluster_bootstrap(np.arange(len(rows)), [rows], [None], n_boot=300, seed=1)
    ratio = np.diff(clustered[0])[0] / np.diff(naive[0])[0]
    assert 2.5 < ratio < 4.0


def test_bootstrap_interval_matches_normal_theory_and_is_seeded():
    rng = np.random.default_rng(3)
    x = (rng.random(20_000) < 0.3).astype(float)
    ci = cluster_bootstrap(np.arange(len(x)), [x], [None], n_boot=1_000, seed=7)[0]
    half = 1.96 * np.sqrt(x.mean() * (1 - x.mean()) / len(x))
    assert (ci[1] - ci[0]) / 2 == pytest.approx(half, rel=0.12)
    assert ci[0] < x.mean() < ci[1]
    again = cluster_bootstrap(np.arange(len(x)), [x], [None], n_boot=1_000, seed=7)[0]
    np.testing.assert_array_equal(ci, again)


# ---------------------------------------------------------------------------------------------- synthetic truth
def test_ips_and_doubly_robust_are_unbiased_on_synthetic_logs():
    """Known rewards r(c, k) = exam(k) x rel(c); uniform logging over 8 candidates for 3 positions;
    a stochastic policy. Over 400 independent logs the mean IPS and DR estimates equal the true value,
    DR with the perfect reward model varies less than IPS (what remains is the clicks' own noise), and DR
    with a wrong model stays unbiased."""
    rng = np.random.default_rng(11)
    n_logs, n_req, n_cand, n_pos = 400, 300, 8, 3
    exam = 1.0 / (1.0 + np.arange(n_pos))
    rel = rng.uniform(0.05, 0.6, (n_req, n_cand))
    reward = rel[:, :, None] * exam[None, None, :]  # (request, candidate, position)
    score = rng.random((n_req, n_cand))
    top = np.argsort(-score, axis=1)[:, :n_pos]  # the policy's greedy slate
    eps = 0.3
    pi = np.full((n_req, n_cand, n_pos), eps / n_cand)  # epsilon-greedy marginals
    pi[np.arange(n_req)[:, None], top, np.arange(n_pos)[None, :]] += 1 - eps
    truth = (pi * reward).sum(axis=1).mean()
    direct_perfect = (pi * reward).sum(axis=1).ravel()  # per slot, request-major
    direct_wrong = (pi * 0.5).sum(axis=1).ravel()

    ips, dr, dr_wrong = [], [], []
    for _ in range(n_logs):
        shown = np.argsort(rng.random((n_req, n_cand)), axis=1)[:, :n_pos]  # uniform slates
        r_idx = np.arange(n_req)[:, None]
        k_idx = np.arange(n_pos)[None, :]
        p_true = reward[r_idx, shown, k_idx].ravel()
        clicked = (rng.random(p_true.shape) < p_true).astype(float)
        w = importance_weights(pi[r_idx, shown, k_idx].ravel(), np.full(p_true.shape, 1 / n_cand))
        ips.append(ips_value(clicked, w))
        dr.append(dr_value(clicked, w, p_true, direct_perfect))
        dr_wrong.append(dr_value(clicked, w, np.full(p_true.shape, 0.5), direct_wrong))
    for values in (ips, dr, dr_wrong):
        se = np.std(values) / np.sqrt(n_logs)
        assert abs(np.mean(values) - truth) < 3.5 * se + 1e-12
    assert np.std(dr) < 0.9 * np.std(ips)


# ---------------------------------------------------------------------------------------------- validation
def test_policy_missing_columns_are_named():
    with pytest.raises(PolicyFormatError, match=r"lacks column\(s\) \['probability'\]"):
        validate_policy(pd.DataFrame({"request_id": ["r"], "position": [0], "item_id": ["a"]}))
    with pytest.raises(PolicyFormatError, match=r"lacks column\(s\) \['rhat'\]"):
        validate_policy(policy_frame(["r"], [0], ["a"], [1.0]), reward="rhat")


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_policy_probability_outside_unit_interval_names_rows(bad):
    frame = policy_frame(["r1", "r1", "r2"], [0, 1, 0], ["a", "b", "c"], [0.5, bad, 1.0])
    with pytest.raises(PolicyFormatError) as err:
        validate_policy(frame)
    msg = str(err.value)
    assert ("probability is not a number in [0, 1]" in msg or "'probability' is empty" in msg) and "rows 1)" in msg


def test_policy_duplicate_rows_are_named():
    frame = policy_frame(["r1", "r1", "r2", "r1"], [0, 1, 0, 0], ["a", "b", "c", "a"], [0.2, 0.5, 1.0, 0.3])
    with pytest.raises(PolicyFormatError, match=r"repeats in 2 row\(s\) \(rows 0, 3\)"):
        validate_policy(frame)


def test_policy_slot_summing_above_one_is_named():
    frame = policy_frame(
        ["r1", "r1", "r1", "r2", "r2", "r3", "r3"],
        [0, 0, 1, 2, 2, 0, 0],
        ["a", "b", "a", "c", "d", "e", "f"],
        [0.6, 0.5, 1.0, 0.7, 0.30000000001, 0.5, 0.5],
    )
    with pytest.raises(PolicyFormatError) as err:
        validate_policy(frame)
    msg = str(err.value)
    assert "1 slot(s) (r1 position 0)" in msg and "sums 1.1" in msg  # r2 and r3 are within tolerance


def test_policy_non_integer_position_is_named():
    with pytest.raises(PolicyFormatError, match=r"position is not an integer in 1 row\(s\) \(rows 1\)"):
        validate_policy(policy_frame(["r", "r"], [0, 1.5], ["a", "b"], [1.0, 1.0]))


def test_log_slot_logged_twice_is_named():
    log = tiny_log()
    log.loc[3, "position"] = 0
    with pytest.raises(LogFormatError, match=r"logged more than once in 2 row\(s\) \(rows 2, 3\).*r2 position 0"):
        join_policy(log, validate_policy(policy_frame(["r1"], [0], ["a"], [1.0])))


def test_policy_rows_of_other_requests_are_ignored_and_counted():
    policy = policy_frame(["r1", "zz", "zz", "yy"], [0, 0, 1, 0], ["a", "a", "b", "c"], [1.0, 1.0, 1.0, 1.0])
    j = join_policy(tiny_log(), validate_policy(policy))
    assert j.ignored_policy_rows == 3 and j.ignored_policy_requests == 2 and j.requests == 2
    np.testing.assert_array_equal(j.probability, [1.0, 0.0, 0.0, 0.0])


def test_csv_policy_with_numeric_looking_ids_joins_a_string_log(tmp_path):
    log = tiny_log().assign(request_id=["1", "1", "2", "2"], item_id=["10", "11", "12", "13"])
    path = tmp_path / "policy.csv"
    path.write_text("request_id,position,item_id,probability\n1,0,10,1\n2,1,13,0.5\n")
    j = join_policy(log, read_policy(path))
    np.testing.assert_array_equal(j.probability, [1.0, 0.0, 0.0, 0.5])


# ---------------------------------------------------------------------------------------------- ground truth
@dataclass
class Simulated:
    """A uniform log, the candidate sets it was drawn from, and every candidate's true click
    probability at every position, so any policy's true value on these requests is known exactly."""

    log: pd.DataFrame
    sim: Simulation
    truth: GroundTruth
    members: np.ndarray
    times: np.ndarray
    items: np.ndarray  # (requests, candidates)
    valid: np.ndarray
    true_p: np.ndarray  # (requests, candidates, positions)
    slots: np.ndarray  # logged positions per request


# A 95% interval misses the truth one time in 20; the seed fixes the outcome. Over seeds 0-12 the intervals
# here missed at about that rate (on seeds 6, 8 and 10, by a hair), so this seed is typical, not picked.
SEED = 0
SIZE = {"n_requests": 4_000, "batch_size": 4_096}  # one batch: candidates come first from the RNG stream


@pytest.fixture(scope="module")
def simulated() -> Simulated:
    # Fatigue off: with it, a click's probability depends on what the policy showed before, so the value
    # of another policy on these requests would not be fixed by them (the logged row's is still exact).
    world = build_world(WorldConfig.build("world", n_members=400, seed=SEED))
    truth = GroundTruth(world, TruthParams(w_fatigue=0.0))
    cfg = SessionConfig.build("sessions", seed=SEED + 100, policy="uniform", **SIZE)
    sim = Simulation(world, cfg, truth)
    log = pa.concat_tables([lg for _, lg in sim.sessions()]).to_pandas()
    rng = np.random.default_rng([world.config.seed, cfg.seed])  # the run's stream: schedule, then candidates
    members, times = sim.request_schedule(rng)
    items, _, valid = sim.candidates(members, times, rng)
    n_req, n_cand = items.shape
    k = np.arange(cfg.slate_size)
    t_imp = np.broadcast_to(times[:, None, None] + 0.05 * k[None, None, :], (n_req, n_cand, len(k)))
    rel = truth.relevance(
        np.repeat(members, n_cand * len(k)), np.repeat(np.maximum(items, 0).ravel(), len(k)), t_imp.ravel()
    ).reshape(t_imp.shape)
    true_p = truth.examination(k)[None, None, :] * rel
    slots = np.minimum(valid.sum(axis=1), cfg.slate_size)
    return Simulated(log, sim, truth, members, times, items, valid, true_p, slots)


def slate_table(s: Simulated, order: np.ndarray, probability: float = 1.0) -> tuple[pd.DataFrame, np.ndarray]:
    """The policy showing candidate ``order[i, k]`` at each logged slot (i, k), and its true values there."""
    rows = np.repeat(np.arange(len(s.items)), s.true_p.shape[2])
    pos = np.tile(np.arange(s.true_p.shape[2]), len(s.items))
    keep = pos < s.slots[rows]
    rows, pos = rows[keep], pos[keep]
    cand = order[rows, pos]
    frame = policy_frame(
        s.sim.request_names(0, rows).to_numpy(zero_copy_only=False),
        pos,
        s.sim.names.item.take(pa.array(s.items[rows, cand])).to_numpy(zero_copy_only=False),
        probability,
    )
    return frame, s.true_p[rows, cand, pos]


def ranking(s: Simulated, scores: np.ndarray) -> np.ndarray:
    return np.argsort(np.where(s.valid, -scores, np.inf), axis=1, kind="stable")


def oracle(s: Simulated) -> np.ndarray:
    n_cand = s.items.shape[1]
    rel = s.truth.relevance(np.repeat(s.members, n_cand), np.maximum(s.items, 0).ravel(), np.repeat(s.times, n_cand))
    return ranking(s, rel.reshape(s.items.shape))


def popularity(s: Simulated) -> np.ndarray:
    return ranking(s, s.sim.world.item_popularity[np.maximum(s.items, 0)])


def test_ground_truth_is_the_simulators(simulated):
    """The recomputed truth is the simulator's: it equals every logged row's ``true_p``, and the oracle
    policy's true value equals the mean ``true_p`` of the simulator's own deterministic oracle run."""
    s = simulated
    logged_item = s.sim.names.item.to_numpy(zero_copy_only=False)
    request = s.log["request_id"].str.rsplit("-", n=1).str[1].astype(int).to_numpy()
    cand = np.argmax(
        logged_item[np.maximum(s.items[request], 0)] == s.log["item_id"].to_numpy()[:, None], axis=1
    )  # which candidate was logged
    np.testing.assert_allclose(s.true_p[request, cand, s.log["position"]], s.log["true_p"], rtol=1e-12)

    from simulator.run import scorer_for

    cfg = s.sim.config.model_copy(update={"policy": "epsilon-greedy", "epsilon": 0.0})
    greedy = Simulation(s.sim.world, cfg, s.truth, scorer_for("oracle", s.sim.world, s.truth))
    greedy_log = pa.concat_tables([lg for _, lg in greedy.sessions()]).to_pandas()
    _, values = slate_table(s, oracle(s))
    assert len(greedy_log) == len(values) == len(s.log)
    assert greedy_log["true_p"].mean() == pytest.approx(values.mean(), rel=1e-12)


def test_logging_policy_evaluates_to_its_logged_mean(simulated):
    """pi = mu: every weight is 1, IPS and SNIPS are the logged mean exactly, and the interval holds the
    true value, the mean of the logged rows' true click probabilities."""
    log = simulated.log
    policy = validate_policy(log[["request_id", "position", "item_id"]].assign(probability=log["propensity"]))
    j = join_policy(log, policy)
    result = evaluate(j.clicked, j.propensity, j.probability, j.clusters, n_boot=200, seed=1)
    e = result.estimates
    assert e["ips"].value == pytest.approx(e["logged"].value, rel=1e-12)
    assert e["snips"].value == pytest.approx(e["logged"].value, rel=1e-12)
    assert result.ess == pytest.approx(len(log)) and result.max_weight == pytest.approx(1.0)
    truth = log["true_p"].mean()
    assert e["ips"].ci95[0] <= truth <= e["ips"].ci95[1]


def test_deterministic_policy_replay_and_ips_cover_the_true_value(simulated):
    table, values = slate_table(simulated, oracle(simulated))
    truth = values.mean()
    j = join_policy(simulated.log, validate_policy(table))
    result = evaluate(j.clicked, j.propensity, j.probability, j.clusters, n_boot=300, seed=2)
    assert result.matched > 1_000
    assert result.estimates["logged"].ci95[1] < 0.5 * truth  # the oracle is far better than uniform
    for name in ("replay", "ips", "snips"):
        est = result.estimates[name]
        assert est.ci95[0] <= truth <= est.ci95[1], (name, est, truth)
        assert est.value == pytest.approx(truth, rel=0.15)


def test_stochastic_policy_ips_snips_and_dr_cover_the_true_value(simulated):
    """A mixture: the oracle's slate w.p. 0.6, the popularity ranking's w.p. 0.4. DR with the true click
    probabilities as its reward model is tighter than IPS; with a constant model it still covers."""
    s = simulated
    best, best_values = slate_table(s, oracle(s), 0.6)
    pop, pop_values = slate_table(s, popularity(s), 0.4)
    truth = (0.6 * best_values + 0.4 * pop_values).mean()
    both = pd.concat([best.assign(rhat=best_values), pop.assign(rhat=pop_values)])
    table = both.groupby(["request_id", "position", "item_id"], as_index=False).agg(
        probability=("probability", "sum"), rhat=("rhat", "first")
    )
    log = s.log.assign(rhat=s.log["true_p"])
    j = join_policy(log, validate_policy(table, reward="rhat"), reward="rhat")
    result = evaluate(j.clicked, j.propensity, j.probability, j.clusters, j.reward_logged, j.direct, n_boot=300)
    for name in ("ips", "snips", "dr"):
        est = result.estimates[name]
        assert est.ci95[0] <= truth <= est.ci95[1], (name, est, truth)
    width = {n: e.ci95[1] - e.ci95[0] for n, e in result.estimates.items()}
    assert width["dr"] < 0.9 * width["ips"]  # the clicks' own noise, which no model removes, dominates both
    assert result.estimates["dr"].value == pytest.approx(truth, rel=0.1)

    wrong = join_policy(log.assign(rhat=0.1), validate_policy(table.assign(rhat=0.1), reward="rhat"), reward="rhat")
    dr = evaluate(wrong.clicked, wrong.propensity, wrong.probability, wrong.clusters, wrong.reward_logged, wrong.direct)
    assert dr.estimates["dr"].ci95[0] <= truth <= dr.estimates["dr"].ci95[1]
