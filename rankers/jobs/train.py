"""Trains the jobs scorer from logged traffic: embeddings, point-in-time features, tower and LightGBM.

1. Fold every event once for the texts and sessions (no labels are read): LSA and MiniLM embeddings
   of member profiles and job postings, Prod2Vec of members' engaged-job sessions.
2. Replay the events to each logged job impression (``rankers.training.replay``) and compute its
   features with the serving code. Prod2Vec features of a row come from a model fitted without that
   member's sessions (two member folds), so a click never explains itself through its own session.
3. Fit the tower model and the LightGBM baseline on the earlier rows; on the time-later validation
   slice report AUC and mAP@K of both (and of popularity), fit Platt calibration on its first half,
   and report O/E on its second half.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from itertools import groupby
from typing import Any

import numpy as np
import pandas as pd

from feedrank.contracts import ItemType
from rankers.calibration import PlattCalibrator, observed_over_expected
from rankers.inventory import Inventory
from rankers.jobs.embeddings import CachedEntities, EmbeddingTable, EntityEncoder, train_prod2vec
from rankers.jobs.features import FEATURES, JobFeaturizer
from rankers.jobs.models import TowerClassifier, auc, lightgbm_model, map_at_k
from rankers.jobs.ranker import JobsScorer
from rankers.jobs.settings import settings
from rankers.training import LoggedTraffic, Progress, TrainedFpr, replay
from rankers.vectors import sigmoid

SENIORITY_LEVELS = ("intern", "junior", "mid", "senior", "lead")


def member_fold(member_id: str, folds: int = 2) -> int:
    return zlib.crc32(member_id.encode()) % folds


def sessions(inv: Inventory) -> dict[str, list[str]]:
    """Each member's engaged jobs in time order, repeats in a row collapsed (a click then an apply)."""
    out: dict[str, list[str]] = {}
    for member_id in inv.history:
        seq = [k for k, _ in groupby(inv.engaged_items(member_id, ItemType.JOB))]
        if seq:
            out[member_id] = seq
    return out


def fold_events(traffic: LoggedTraffic, progress: Progress) -> Inventory:
    inv = Inventory()
    task = progress.add_task("folding events", total=len(traffic.events))
    step = 50_000
    for lo in range(0, len(traffic.events), step):
        for e in traffic.events[lo : lo + step]:
            inv.apply(e)
        progress.update(task, advance=min(step, len(traffic.events) - lo))
    return inv


def fit_prod2vec(seqs: dict[str, list[str]], s: dict[str, Any], members: Sequence[str] | None = None) -> EmbeddingTable:
    chosen = seqs.values() if members is None else [seqs[m] for m in members]
    return train_prod2vec(
        list(chosen),
        dim=int(s["p2v_dim"]),
        window=int(s["p2v_window"]),
        epochs=int(s["p2v_epochs"]),
        negative=int(s["p2v_negative"]),
        min_count=int(s["p2v_min_count"]),
        seed=int(s["seed"]),
    )


def build_featurizer(
    final: Inventory, s: dict[str, Any], global_ctr: float, progress: Progress
) -> tuple[JobFeaturizer, list[EmbeddingTable]]:
    """The fitted featurizer (full Prod2Vec) and the per-fold Prod2Vec tables for training rows."""
    members = sorted(final.members)
    jobs = list(final.by_type.get(ItemType.JOB, ()))
    profiles = [final.members[m] for m in members]
    postings = [final.items[j] for j in jobs]
    encoder = EntityEncoder(int(s["svd_dim"]), bool(s["minilm"]), int(s["minilm_batch"]), int(s["seed"]))
    encoder.fit(profiles, postings)
    texts = CachedEntities(encoder)
    task = progress.add_task("encoding members and jobs", total=len(members) + len(jobs))
    texts.warm("member", members, profiles)
    progress.update(task, advance=len(members))
    texts.warm("job", jobs, postings)
    progress.update(task, advance=len(jobs))

    seqs = sessions(final)
    task = progress.add_task("prod2vec", total=3)
    full = fit_prod2vec(seqs, s)
    progress.update(task, advance=1)
    folds = []
    for f in range(2):
        folds.append(fit_prod2vec(seqs, s, [m for m in seqs if member_fold(m) != f]))
        progress.update(task, advance=1)
    featurizer = JobFeaturizer(
        texts,
        full,
        SENIORITY_LEVELS,
        global_ctr,
        ctr_prior_strength=float(s["ctr_prior_strength"]),
        half_life_hours=float(s["half_life_hours"]),
        fast_half_life_hours=float(s["fast_half_life_hours"]),
        history=int(s["history"]),
    )
    return featurizer, folds


P2V_COLUMNS = [FEATURES.index(c) for c in ("p2v_max", "p2v_mean", "has_p2v")]


def mask_unembedded(X: np.ndarray, age_h: np.ndarray, staleness_h: np.ndarray) -> None:
    """Clears the Prod2Vec features of rows whose job is younger than the row's model staleness.

    A served table stops at its training day: every job posted since has no vector, whatever its age.
    In training rows the table (fitted on the whole window) knows nearly every job, so without this
    "no vector" means "posted in the last hours" and the model scores every later job as brand new
    for as long as it serves (measured: jobs posted after training over-predicted 1.2-1.8x after their
    first day). ``staleness_h`` is how long the serving model has been out, drawn per row."""
    X[np.ix_(age_h < staleness_h, P2V_COLUMNS)] = 0.0


def replay_features(
    traffic: LoggedTraffic,
    rows: pd.DataFrame,
    featurizer: JobFeaturizer,
    folds: list[EmbeddingTable],
    progress: Progress,
    staleness_hours: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Point-in-time features of every row, with the member's and the job's text rows and the job's
    engagements so far (the popularity baseline). With ``staleness_hours``, Prod2Vec features are
    cleared as a model up to that old would see them (``mask_unembedded``)."""
    X = np.zeros((len(rows), len(FEATURES)), dtype=np.float32)
    age_h = np.zeros(len(rows), dtype=np.float64)
    engagements = np.zeros(len(rows), dtype=np.float64)
    m_rows = np.zeros(len(rows), dtype=np.int64)
    j_rows = np.zeros(len(rows), dtype=np.int64)
    offset = 0

    def on_chunk(inv: Inventory, chunk: pd.DataFrame) -> None:
        nonlocal offset
        rid = chunk["request_id"].to_numpy()
        mem = chunk["member_id"].to_numpy()
        ts = chunk["timestamp"].to_numpy(dtype=np.float64)
        items = chunk["item_id"].to_numpy()
        start = 0
        for _, group in groupby(range(len(chunk)), key=lambda i: rid[i]):
            n = sum(1 for _ in group)
            m = str(mem[start])
            b = featurizer.compute(
                inv, m, [str(i) for i in items[start : start + n]], float(ts[start]), prod2vec=folds[member_fold(m)]
            )
            sl = slice(offset + start, offset + start + n)
            X[sl], m_rows[sl], j_rows[sl], engagements[sl] = b.X, b.member_row, b.job_rows, b.engagements
            age_h[sl] = b.age_h
            start += n
        offset += len(chunk)

    replay(traffic.events, rows, on_chunk, progress=progress)
    if staleness_hours > 0:
        mask_unembedded(X, age_h, np.random.default_rng(seed).uniform(0.0, staleness_hours, len(rows)))
    return X, m_rows, j_rows, engagements


def train(traffic: LoggedTraffic, params: dict[str, Any], progress: Progress) -> TrainedFpr:
    s = settings(params)
    rows = traffic.rows(ItemType.JOB.value)
    y = rows["clicked"].to_numpy().astype(int)
    if len(rows) < 20 or y.sum() < 4:
        raise ValueError(f"too little job traffic to train on: {len(rows)} rows, {int(y.sum())} clicks")
    ts = rows["timestamp"].to_numpy(dtype=np.float64)
    split = float(np.quantile(ts, 1.0 - float(s["validation_fraction"])))
    is_train = ts < split
    final = fold_events(traffic, progress)
    featurizer, folds = build_featurizer(final, s, float(y[is_train].mean()), progress)
    X, m_rows, j_rows, engagements = replay_features(
        traffic, rows, featurizer, folds, progress, float(s["p2v_staleness_hours"]), int(s["seed"])
    )

    enc = featurizer.texts.encoder
    # the towers read every block; MiniLM's 384 columns only if configured
    keep = np.ones(enc.dim, dtype=bool)
    if not s["tower_minilm"] and (sl := enc.minilm_slice) is not None:
        keep[sl] = False
    tower_text = np.flatnonzero(keep)
    M = featurizer.texts.matrix("member")[:, tower_text]
    J = featurizer.texts.matrix("job")[:, tower_text]
    XT = np.hstack([X, M[m_rows], J[j_rows]])
    tr, va = np.flatnonzero(is_train), np.flatnonzero(~is_train)
    if len(va) == 0 or y[va].sum() == 0 or y[va].sum() == len(va) or len(np.unique(y[tr])) < 2:
        raise ValueError("the validation slice needs clicked and not-clicked rows; add traffic")

    tower = TowerClassifier(
        member_dims=M.shape[1],
        job_dims=J.shape[1],
        dim=int(s["tower_dim"]),
        hidden=int(s["tower_hidden"]),
        epochs=int(s["tower_epochs"]),
        lr=float(s["tower_lr"]),
        batch_size=int(s["tower_batch"]),
        weight_decay=float(s["tower_weight_decay"]),
        dropout=float(s["tower_dropout"]),
        seed=int(s["seed"]),
        progress=progress,
    ).fit(XT[tr], y[tr])
    task = progress.add_task("lightgbm", total=1)
    lgbm = lightgbm_model(s).fit(X[tr], y[tr])
    progress.update(task, advance=1)

    k = int(s["map_k"])
    req = rows["request_id"].to_numpy()[va]
    raw = tower.decision_function(XT[va])
    lgb_p = lgbm.predict_proba(X[va])[:, 1]
    pop = engagements[va]
    metrics: dict[str, float] = {
        "rows_train": float(len(tr)),
        "rows_valid": float(len(va)),
        "clicks_train": float(y[tr].sum()),
        "clicks_valid": float(y[va].sum()),
        "tower_auc": auc(y[va], raw),
        f"tower_map@{k}": map_at_k(req, y[va], raw, k),
        "lightgbm_auc": auc(y[va], lgb_p),
        f"lightgbm_map@{k}": map_at_k(req, y[va], lgb_p, k),
        "popularity_auc": auc(y[va], pop),
        f"popularity_map@{k}": map_at_k(req, y[va], pop, k),
    }

    # Platt on the first half of the validation slice (by time), O/E measured on the second half.
    half = len(va) // 2
    cal_idx = np.arange(half) if 0 < y[va][:half].sum() < half else np.arange(len(va))
    calibrator = PlattCalibrator().fit(raw[cal_idx], y[va][cal_idx])
    rest = np.setdiff1d(np.arange(len(va)), cal_idx)
    check = rest if len(rest) else cal_idx
    p = calibrator.predict(raw)
    metrics["tower_oe"] = observed_over_expected(y[va][check], p[check])
    metrics["tower_oe_uncalibrated"] = observed_over_expected(y[va][check], sigmoid(raw[check]))
    # the served model's figures under the names every FPR reports
    metrics["auc"], metrics["o_over_e"] = metrics["tower_auc"], metrics["tower_oe"]

    scorer = JobsScorer(featurizer, tower, calibrator, tower_text, version="tower-v1")
    return TrainedFpr(scorer, metrics, s)
