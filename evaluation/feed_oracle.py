"""Does the whole system's feed beat simple feeds and each FPR alone? Measured on the simulator's
held-out traffic against the ground truth.

The simulated world is split in time and the models are stacked in it: every configured FPR is trained
on the logged traffic of the first half, the second pass (SPR) on point-in-time rows of the impressions
from there to the split (70%), scored by those FPRs (so the SPR learns from FPR scores of traffic the
FPRs never saw, as it will get them when serving), and the SPR's calibration (O/E overall and per
source) is reported on the rows after the split. Then, for held-out feed requests, the inventory and
the feature rows are replayed up to each request, every FPR answers its top-k, and the mixer (SPR +
re-ranking rules, as configured) builds the feed, exactly as the live mixer would from the same
candidates and stored features.

The feed is compared with other rankings of the same candidates (the union of all FPRs' answers):
chronological, popularity, the SPR's order without rules, and each FPR's own top of its inventory.
Each is scored by (1) expected engagement under the ground truth, the expected clicks on the slate
(``sum_pos examination(pos) * relevance``, relevance with the member's fatigue from earlier
impressions), and (2) NDCG@k with the truth's relevance as the gain and the oracle's ordering of the
union as the ideal (the same ideal for every ranking; a ranking shorter than k just scores lower).
Differences from the system's feed are paired per request and given with their standard error, and a
rule ablation rebuilds the feed without each rule in turn.

The truth values an item for its click probability alone: product rules (quotas, one people card,
diversity) can only cost in these metrics, and the ablation says how much each one costs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from evaluation.feature_replay import FeatureInventory, stored_arrays
from evaluation.fpr_oracle import SimulatedWorld, held_out_requests
from evaluation.observed_expected import evaluate_oe, ratio_stats, with_time_buckets
from evaluation.served_log import served_log
from features.families import numeric
from features.training_set import build_training_set
from feedrank.contracts import CONNECTIONS, Candidate, ItemType
from feedrank.settings import REPO_ROOT
from rankers.calibration import calibration_report
from rankers.fpr import FirstPassRanker, RetrainedRanker
from rankers.inventory import Inventory
from rankers.mixer.mixer import FeedMixer, MixResult, answer_in_process
from rankers.mixer.spr import LOGGED_BY, SecondPassRanker, new_to_fpr
from rankers.registry import PipelineConfig, load_config
from rankers.rules.base import RerankRule
from rankers.rules.dedupe import Dedupe
from rankers.rules.truncate import Truncate
from rankers.training import NoProgress, Progress, replay
from simulator.truth import expected_clicks, ndcg_against_oracle, oracle_order

SYSTEM = "system"
SYSTEM_NO_EXPLORATION = "system (no exploration)"
SPR_ONLY = "spr (no rules)"
CHRONOLOGICAL = "chronological"
POPULARITY = "popularity"
ORACLE = "oracle"
SIMULATOR_POLICY = "simulator"  # the ``logged_by`` of the simulator's own log: its policy, not the mixer's


@dataclass
class FeedSnapshot:
    """One evaluated request, handed to ``inspect`` with the inventory as it stood (tests check the
    feed against it; it changes once ``inspect`` returns)."""

    request_id: str
    member_id: str
    now: float
    inv: FeatureInventory
    answers: dict[str, list[Candidate]]
    union: list[str]  # candidate ids of all FPRs, first answer first, no repeats
    feed: MixResult
    feed_no_exploration: MixResult
    relevance: dict[str, float]  # true relevance of every union item in the simulator's index
    rankings: dict[str, list[str]]  # every compared ranking, truncated to the slate


def chronological_order(inv: Inventory, union: list[str]) -> list[str]:
    """Newest first by creation time; member cards (never created as items) after every item."""
    created = [inv.items[i].created_at if i in inv.items else None for i in union]
    order = sorted(range(len(union)), key=lambda j: (created[j] is None, -(created[j] or 0.0), j))
    return [union[j] for j in order]


def popularity_order(inv: Inventory, union: list[str]) -> list[str]:
    """Most engaged first: an item by its engagements so far, a member card by the member's followers
    and connections (the most connected members are the "popular people" list)."""

    def pop(i: str) -> float:
        item = inv.items.get(i)
        if item is not None:
            return float(item.engagements)
        return float(inv.followers.get(i, 0) + len(inv.connections.get(i, ())))

    score = [pop(i) for i in union]
    order = sorted(range(len(union)), key=lambda j: (-score[j], j))
    return [union[j] for j in order]


def feed_violations(inv: Inventory, member_id: str, feed: MixResult, union: set[str]) -> dict[str, int]:
    """What must never reach a feed: items no FPR proposed, repeats, blocked actors (either way), the
    member's own items or card, connections-only posts of non-connections."""
    out = {"not_a_candidate": 0, "repeated": 0, "blocked": 0, "invisible": 0}
    ids = [s.item_id for s in feed.slots]
    out["repeated"] = len(ids) - len(set(ids))
    for s in feed.slots:
        out["not_a_candidate"] += s.item_id not in union
        people = {s.actor_id, s.item_id} if s.item_type == ItemType.MEMBER.value else {s.actor_id}
        out["blocked"] += any(inv.is_blocked(member_id, p) for p in people)
        item = inv.items.get(s.item_id)
        own = member_id in people
        private = item is not None and item.visibility == CONNECTIONS
        out["invisible"] += own or (private and not inv.is_connected(member_id, item.actor_id))
    return out


@dataclass
class TrainedSystem:
    """Every FPR and the SPR, trained on the traffic before ``split``, and what the training reported."""

    split: float
    rankers: dict[str, FirstPassRanker]
    spr: SecondPassRanker
    spr_holdout: dict[str, Any]  # calibration_report on the point-in-time rows at or after the split
    fpr_metrics: dict[str, dict[str, float]]
    rows: pd.DataFrame  # the SPR's point-in-time rows from the FPRs' split on, in time order
    served: pd.DataFrame = field(default_factory=pd.DataFrame)  # the served log (``served_log``), if any


def add_oe_intervals(report: dict[str, Any], test: pd.DataFrame, p: np.ndarray) -> None:
    """The 95% interval of each O/E against the clicks (``o_over_e_ci``, clustered by request): how far
    from 1 the held-out clicks alone would put a perfectly calibrated model."""
    if not len(test):
        return
    label = test["label"].to_numpy(dtype=np.float64)
    requests = pd.factorize(test["request_id"])[0]
    overall = ratio_stats(label, p, None, requests).iloc[0]
    report["o_over_e_ci"] = [float(overall["ci_low"]), float(overall["ci_high"])]
    sources, names = pd.factorize(test["source"])
    per_source = ratio_stats(label, p, sources, requests, len(names))
    for name, row in zip(names, per_source.itertuples(), strict=True):
        report["by_source"][str(name)]["o_over_e_ci"] = [float(row.ci_low), float(row.ci_high)]


def train_system(
    sw: SimulatedWorld,
    train_frac: float = 0.7,
    config: PipelineConfig | None = None,
    params: Mapping[str, dict[str, Any]] | None = None,
    spr_C: float = 1.0,
    progress: Progress | None = None,
    fpr_frac: float = 0.5,
    served_requests: int = 0,
    seed: int = 0,
    fpr_retrain_s: float | None = None,
) -> TrainedSystem:
    """Stacked in time: every FPR trained (by its own trainer) on the traffic before ``fpr_frac`` of
    the time; the SPR fitted on the point-in-time rows from there to the split (``train_frac``),
    scored by those FPRs; both reported on the rows after the split.

    The SPR must learn from FPR scores like the ones it will get when serving: scores of impressions
    an FPR was trained on are overconfident, and an SPR fitted on them under-predicts on new traffic.

    With ``served_requests``, that many requests from the FPRs' split on (seeded by ``seed``) are also
    logged as the deployed system would log them (``served_log``: the FPRs' answers in a random
    order, clicks from the truth); the SPR trains on those before the split as well, and its
    calibration on those after it is reported as ``served``. The simulator's own log alone leaves the
    SPR to learn from candidates unlike the ones it ranks. The SPR's calibration layer is fitted per
    log (``logged_by``): the serving policy's on the served rows, which the mixer ranks by, the
    simulator's on its rows, which predict its held-out rows.

    With ``fpr_retrain_s``, every FPR is also retrained that often from its split on, each time on all
    the traffic before, as a team's scheduled job would (``RetrainedScorer``): the SPR then learns from,
    and is held out on, FPRs of the same ages. Trained once, the FPRs are older on the held-out days
    than on any day the SPR learned from. Each retraining is also another model, though: in the
    4,000-member 14-day world (seed 12), retrained every 2.09 days, the served log's held-out jobs went
    from O/E 1.000 to 0.935 against the clicks, the older jobs with them.

    ``params`` overrides each FPR trainer's parameters by FPR name (``{}`` each by default: the team's
    configured settings)."""
    progress = progress or NoProgress()
    config = config or load_config(REPO_ROOT / "config/pipeline.toml")
    params = params or {}
    if not 0 < fpr_frac < train_frac < 1:
        raise ValueError(f"need 0 < fpr_frac < train_frac < 1, got {fpr_frac} and {train_frac}")
    if served_requests < 0:
        raise ValueError(f"served_requests must be 0 or more, got {served_requests}")
    if fpr_retrain_s is not None and fpr_retrain_s <= 0:
        raise ValueError(f"fpr_retrain_s must be positive, got {fpr_retrain_s}")
    split = sw.traffic.split_time(train_frac)
    fpr_split = sw.traffic.split_time(fpr_frac)
    end = float(sw.traffic.log["timestamp"].max()) if len(sw.traffic.log) else fpr_split
    deployed = [fpr_split]
    while fpr_retrain_s is not None and deployed[-1] + fpr_retrain_s <= end:
        deployed.append(deployed[-1] + fpr_retrain_s)
    rankers: dict[str, FirstPassRanker] = {}
    metrics: dict[str, dict[str, float]] = {}
    for name, spec in config.fprs.items():
        task = progress.add_task(f"training FPR {name}", total=len(deployed))
        built: list[FirstPassRanker] = []
        for t in deployed:
            before = sw.traffic.before(t)
            trained = spec.resolve_trainer()(before, dict(params.get(name, {})), progress).stamp(before)
            built.append(spec.build(model=trained.scorer))
            metrics.setdefault(name, dict(trained.metrics))  # the first model's, on the FPRs' split
            progress.update(task, advance=1)
        rankers[name] = built[0] if len(built) == 1 else RetrainedRanker.of(deployed, built)
    task = progress.add_task("point-in-time SPR rows", total=None)
    rows = build_training_set(
        sw.traffic.events,
        {name: r.scorer for name, r in rankers.items()},
        config.source_of_type,
        since=fpr_split,
    )
    progress.update(task, total=1, completed=1)
    rows = rows.sort_values("timestamp", kind="stable").reset_index(drop=True).assign(**{LOGGED_BY: SIMULATOR_POLICY})
    train = rows[rows["timestamp"] < split]  # the rows start at fpr_split (``since``)
    test = rows[rows["timestamp"] >= split]
    served = pd.DataFrame()
    if served_requests:
        requests = held_out_requests(sw.traffic, fpr_split, served_requests, seed)
        served = served_log(sw, rankers, requests, seed=seed, progress=progress)
    if len(served):
        served_before = served["timestamp"] < split
        served_train, served_test = served[served_before], served[~served_before]
        fit_rows = pd.concat([train, served_train], ignore_index=True)
    else:
        served_train = served_test = served
        fit_rows = train
    spr = SecondPassRanker(C=spr_C).fit(fit_rows, fit_rows["label"].to_numpy())
    report = holdout_report(spr, train, test)
    if len(served_test):
        report["served"] = holdout_report(spr, served_train, served_test)
    return TrainedSystem(split, rankers, spr, report, metrics, rows, served)


def holdout_report(spr: SecondPassRanker, train: pd.DataFrame, test: pd.DataFrame) -> dict[str, Any]:
    """The SPR's calibration on ``test`` (overall and per source, with the clicks' intervals), the
    number of ``train`` rows, and the click rates of both: a world whose rates drift moves O/E by itself."""
    p_test = spr.predict_proba(test)[:, 1]
    report = {"rows_train": float(len(train)), **calibration_report(test, p_test)}
    add_oe_intervals(report, test, p_test)
    report["base_rates"] = {
        part: {"label": float(df["label"].mean()), **({"true_p": float(df["true_p"].mean())} if "true_p" in df else {})}
        for part, df in (("train", train), ("held_out", test))
        if len(df)
    }
    report["by_source_day"], report["by_source_new"] = by_source_slices(spr, train, test, p_test)
    return report


def by_source_slices(
    spr: SecondPassRanker, train: pd.DataFrame, test: pd.DataFrame, p_test: np.ndarray
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """O/E over the training rows and the held-out ones, apart, per source and UTC day (``value``:
    ``[source, day, held_out]``; the day of the split in both) and per source and whether the item was
    new to its FPR's model (``[source, new, held_out]``, :func:`new_to_fpr`).

    A source whose calibration drifts while its FPR ages shows a trend across the days, of which the
    pooled held-out ratio shows only the end. Items new to the FPR are the part that grows as it ages:
    in the 4,000-member 14-day world (seed 12) the held-out jobs' O/E against the truth was 0.953,
    the older jobs' 1.010 and the 86 new jobs' 0.874."""
    if not len(train) + len(test) or "timestamp" not in test:
        return [], []
    columns = [c for c in ("label", "source", "timestamp", "request_id", "true_p") if c in test]
    frame = pd.concat([train[columns], test[columns]], ignore_index=True).assign(  # not every feature column
        predicted=np.concatenate([spr.predict_proba(train)[:, 1], p_test]) if len(train) else p_test,
        held_out=np.arange(len(train) + len(test)) >= len(train),
        new=np.concatenate([new_to_fpr(train), new_to_fpr(test)]),
    )
    frame["source"] = frame["source"].astype(str)
    by = [["source", "day", "held_out"], ["source", "new", "held_out"]]
    result = evaluate_oe(with_time_buckets(frame, ["day"]), label="label", by=by, bins=1).to_json()["by"]
    return result["source,day,held_out"], result["source,new,held_out"]


def evaluate_feed(
    sw: SimulatedWorld,
    train_frac: float = 0.7,
    n_requests: int = 400,
    k: int = 10,
    slate: int = 10,
    seed: int = 0,
    progress: Progress | None = None,
    config: PipelineConfig | None = None,
    params: Mapping[str, dict[str, Any]] | None = None,
    inspect: Callable[[FeedSnapshot], None] | None = None,
    rule_ablation: bool = True,
    system: TrainedSystem | None = None,
    fpr_frac: float = 0.5,
    variants: Mapping[str, PipelineConfig] | None = None,
    served_requests: int = 0,
    fpr_retrain_s: float | None = None,
) -> dict[str, Any]:
    """Expected engagement and NDCG@k against the oracle of the system's feed and of the simple feeds,
    on ``n_requests`` held-out requests, and the SPR's held-out calibration.

    ``config`` is the pipeline (``config/pipeline.toml`` by default): its FPRs and rules. The FPRs and
    the SPR are trained by ``train_system`` (``params``: each FPR trainer's overrides, by FPR name)
    unless ``system`` gives them, trained at ``fpr_frac`` and ``train_frac`` of the same world, the SPR
    also on a served log of ``served_requests`` requests, the FPRs retrained every ``fpr_retrain_s``
    if given. ``inspect`` gets every evaluated request
    (``FeedSnapshot``).
    With ``rule_ablation``, the feed without exploration is also built once without each other rule in
    turn (``truncate`` stays): what each rule costs or gains in the same two metrics. ``variants``
    (other rule settings, e.g. ``config.with_rules(...)``) are scored on the same requests, from the
    same trained models and candidates, each paired with the system and with every FPR alone.
    """
    progress = progress or NoProgress()
    config = config or load_config(REPO_ROOT / "config/pipeline.toml")
    traffic = sw.traffic
    system = system or train_system(
        sw,
        train_frac,
        config,
        params,
        progress=progress,
        fpr_frac=fpr_frac,
        served_requests=served_requests,
        seed=seed,
        fpr_retrain_s=fpr_retrain_s,
    )
    split, rankers, spr = system.split, system.rankers, system.spr
    rules: list[RerankRule] = config.build_rules()
    mixer = FeedMixer(spr, rules)
    calm = FeedMixer(spr, [r for r in rules if getattr(r, "name", "") != "exploration"])
    spr_only = FeedMixer(spr, [Dedupe(), Truncate()])
    counts = Counter(r.name for r in calm.rules)
    ablated = {
        (r.name if counts[r.name] == 1 else f"{r.name}#{i}"): FeedMixer(spr, [x for x in calm.rules if x is not r])
        for i, r in enumerate(calm.rules)
        if rule_ablation and r.name != "truncate"
    }

    # Further feeds of the same requests, by the label they are scored under.
    others = {f"without {rule}": m for rule, m in ablated.items()} | {
        f"variant {name}": FeedMixer(spr, cfg.build_rules()) for name, cfg in (variants or {}).items()
    }
    requests = held_out_requests(traffic, split, n_requests, seed)

    names = [SYSTEM, SYSTEM_NO_EXPLORATION, SPR_ONLY, CHRONOLOGICAL, POPULARITY, *(f"fpr:{n}" for n in rankers)]
    engagement: dict[str, list[float]] = {n: [] for n in [*names, ORACLE, *others]}
    ndcg: dict[str, list[float]] = {n: [] for n in [*names, *others]}
    stats: dict[str, Any] = {
        "union_size": [],
        "feed_size": [],
        "unknown_candidates": 0,
        "skipped_requests": 0,
        "explored_requests": 0,
    }
    feed_sources: dict[str, int] = {}
    violations = {"not_a_candidate": 0, "repeated": 0, "blocked": 0, "invisible": 0}
    dropped_by: dict[str, int] = {}
    examination = sw.truth.examination(np.arange(slate, dtype=np.float64))

    def evaluate(inv: FeatureInventory, rid: str, member_id: str, t: float) -> None:
        answers, cands = answer_in_process(rankers, inv, member_id, t)
        union = list(dict.fromkeys(cands["item_id"]))
        known = [i for i in union if i in sw.index]
        stats["unknown_candidates"] += len(union) - len(known)
        if not known or member_id not in sw.index:
            stats["skipped_requests"] += 1
            return
        stored = stored_arrays(inv.rows, member_id, cands)
        feed = mixer.mix(rid, member_id, slate, t, cands, stored, inv, served={})
        feed_calm = calm.mix(rid, member_id, slate, t, cands, stored, inv, served={})
        by_spr = spr_only.mix(rid, member_id, slate, t, cands, stored, inv, served={})
        # true relevance of the union, with the member's fatigue from earlier impressions of each item
        first = {i: j for j, i in reversed(list(enumerate(cands["item_id"])))}
        seen = numeric(stored, "member_item__imp_total")
        rel = sw.relevance(member_id, known, t, np.array([seen[first[i]] for i in known]))
        at = {i: j for j, i in enumerate(known)}
        rankings = {
            SYSTEM: [s.item_id for s in feed.slots],
            SYSTEM_NO_EXPLORATION: [s.item_id for s in feed_calm.slots],
            SPR_ONLY: [s.item_id for s in by_spr.slots],
            CHRONOLOGICAL: chronological_order(inv, known),
            POPULARITY: popularity_order(inv, known),
            **{f"fpr:{n}": [c.item_id for c in answers[n]] for n in rankers},
        }
        rankings = {n: [i for i in r if i in at][:slate] for n, r in rankings.items()}
        scored = dict(rankings)
        for label, m in others.items():
            got = m.mix(rid, member_id, slate, t, cands, stored, inv, served={})
            scored[label] = [s.item_id for s in got.slots if s.item_id in at][:slate]
        for n, r in scored.items():
            order = np.array([at[i] for i in r], dtype=np.int64)
            engagement[n].append(expected_clicks(rel, order, examination))
            ndcg[n].append(ndcg_against_oracle(rel, order, k))
        engagement[ORACLE].append(expected_clicks(rel, oracle_order(rel), examination))
        stats["union_size"].append(len(known))
        stats["feed_size"].append(len(feed.slots))
        stats["explored_requests"] += any("exploration" in s.moved_by for s in feed.slots)
        for s in feed.slots:
            feed_sources[s.source] = feed_sources.get(s.source, 0) + 1
        for rule in feed.dropped.values():
            dropped_by[rule] = dropped_by.get(rule, 0) + 1
        for key, v in feed_violations(inv, member_id, feed, set(union)).items():
            violations[key] += v
        if inspect is not None:
            inspect(
                FeedSnapshot(
                    rid,
                    member_id,
                    t,
                    inv,
                    answers,
                    union,
                    feed,
                    feed_calm,
                    {i: float(rel[at[i]]) for i in known},
                    rankings,
                )
            )

    def on_chunk(inv: Inventory, chunk: pd.DataFrame) -> None:
        assert isinstance(inv, FeatureInventory)
        for rid, member_id, t in zip(chunk["request_id"], chunk["member_id"], chunk["timestamp"], strict=True):
            evaluate(inv, str(rid), str(member_id), float(t))

    replay(
        traffic.events,
        requests,
        on_chunk,
        chunk_seconds=0.0,  # one request per chunk: the inventory and the features as of that very request
        progress=progress,
        until=float(requests["timestamp"].max()) if len(requests) else None,
        inventory=FeatureInventory(),
    )

    def mean(xs: list[float]) -> float:
        return float(np.mean(xs)) if xs else float("nan")

    def se(xs: list[float] | np.ndarray) -> float:
        return float(np.std(xs, ddof=1) / np.sqrt(len(xs))) if len(xs) > 1 else float("nan")

    best = mean(engagement[ORACLE])

    def paired(values: dict[str, list[float]], a: str, b: str) -> list[float]:
        """Mean of ``a`` minus ``b``, request by request, and its standard error."""
        diff = np.asarray(values[a]) - np.asarray(values[b])
        return [mean(list(diff)), se(diff)]

    def summary(n: str) -> dict[str, float]:
        ee = mean(engagement[n])
        # the system's expected engagement minus this ranking's, request by request (paired), and its
        # standard error: "the system beats X" holds where the difference is several standard errors
        diff, diff_se = paired(engagement, SYSTEM, n)
        return {
            "expected_engagement": ee,
            "expected_engagement_se": se(engagement[n]),
            f"ndcg@{k}": mean(ndcg[n]) if n != ORACLE else 1.0,
            "share_of_oracle": ee / best if best > 0 else float("nan"),
            "system_minus_this": diff,
            "system_minus_this_se": diff_se,
        }

    def variant_summary(n: str) -> dict[str, Any]:
        against = [SYSTEM, *(f"fpr:{r}" for r in rankers)]
        return {
            **summary(n),
            "minus": {o: {"engagement": paired(engagement, n, o), f"ndcg@{k}": paired(ndcg, n, o)} for o in against},
        }

    out_rankings = {n: summary(n) for n in [*names, ORACLE]}
    n_eval = len(stats["union_size"])
    total_slots = sum(feed_sources.values())
    return {
        "rankings": out_rankings,
        "rules": [r.name for r in rules],
        "rule_ablation": {rule: summary(f"without {rule}") for rule in ablated},
        "rule_variants": {name: variant_summary(f"variant {name}") for name in variants or {}},
        "spr_holdout": system.spr_holdout,
        "requests": n_eval,
        "skipped_requests": stats["skipped_requests"],
        "k": k,
        "slate": slate,
        "mean_union_size": mean(stats["union_size"]),
        "mean_feed_size": mean(stats["feed_size"]),
        "unknown_candidates": stats["unknown_candidates"],
        "explored_requests": stats["explored_requests"],
        "feed_share_by_source": {s: c / total_slots for s, c in sorted(feed_sources.items())} if total_slots else {},
        "dropped_by_rule": dict(sorted(dropped_by.items())),
        "feed_violations": violations,
        "fpr_train_metrics": system.fpr_metrics,
        "world": {
            "description": traffic.description,
            "events": len(traffic.events),
            "logged_impressions": len(traffic.log),
            "split_time": split,
            "train_frac": train_frac,
        },
    }
