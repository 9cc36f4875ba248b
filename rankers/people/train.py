"""Trains the people scorer: LINE on the connection graph, then a click model on logged member cards.

1. LINE embeddings on the connection graph as of the end of the training traffic (the world's data:
   every member-event the trainer was given). Their nearest-neighbour lists are precomputed here.
2. Point-in-time features for every logged member-card impression (``traffic.rows("member")``), via
   ``rankers.training.replay``: each row sees the inventory as it stood before it was served.
3. The click model is fitted on the earlier rows; the time-later ``validation_fraction`` is split in
   two: Platt calibration is fitted on its first half and auc, log-loss and O/E measured on its
   second half, so the reported numbers are on rows neither step saw. With too little traffic for
   that (a slice without a click), the model fits on every row and Platt calibrates in-sample
   (``calibrated_in_sample`` = 1 in the metrics); no clicks at all is an error.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from feedrank.contracts import EventType
from rankers.calibration import PlattCalibrator, held_out_metrics
from rankers.inventory import Inventory
from rankers.people.features import FEATURES, IndustryAffinity, MemberEmbeddings, matrix, people_features
from rankers.people.line import nearest, train_line, unit
from rankers.people.model import PeopleClickModel
from rankers.people.ranker import PeopleScorer
from rankers.people.settings import load_settings
from rankers.training import LoggedTraffic, Progress, TrainedFpr, replay


def member_graph(traffic: LoggedTraffic) -> tuple[list[str], np.ndarray]:
    """Member ids (joined or connected, sorted) and the connection edges as (E, 2) row indices."""
    ids: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for e in traffic.events:
        if e.event_type == EventType.MEMBER_JOINED:
            ids.add(e.member_id)
        elif e.event_type == EventType.CONNECTION_MADE and e.item_id is not None:
            pairs.append((e.member_id, e.item_id))
    for a, b in pairs:
        ids.add(a)
        ids.add(b)
    order = sorted(ids)
    row = {m: i for i, m in enumerate(order)}
    edges = np.array([(row[a], row[b]) for a, b in pairs], dtype=np.int64).reshape(-1, 2)
    return order, edges


def fit_embeddings(
    traffic: LoggedTraffic, line: dict[str, Any], k: int, progress: Progress
) -> tuple[MemberEmbeddings, list[float]]:
    """LINE on the graph as of the traffic's end, with each member's ``k`` nearest members precomputed."""
    ids, edges = member_graph(traffic)
    emb = train_line(edges, len(ids), progress=progress, **line)
    first, second = unit(emb.first), unit(emb.second)
    # Neighbours in the paper's combined representation: both orders side by side.
    both = np.hstack([first, second]) / np.sqrt(2.0)
    return MemberEmbeddings.of(ids, first, second, nearest(both, k)), emb.losses


def replay_features(
    traffic: LoggedTraffic, rows: pd.DataFrame, emb: MemberEmbeddings, chunk_seconds: float, progress: Progress
) -> tuple[np.ndarray, Inventory]:
    """(len(rows), len(FEATURES)) features, each as of its impression's time (``industry_affinity`` left
    at 0: it is fitted on these rows' labels afterwards), and the inventory at the end."""
    X = np.zeros((len(rows), len(FEATURES)))
    items = rows["item_id"].to_numpy()

    def on_chunk(inv: Inventory, chunk: pd.DataFrame) -> None:
        for member, pos in chunk.groupby("member_id", sort=False).indices.items():
            at = chunk.index.to_numpy()[pos]
            X[at] = matrix(people_features(inv, member, items[at].tolist(), emb))

    until = float(rows["timestamp"].max()) + 1.0 if len(rows) else None
    inv = replay(traffic.events, rows, on_chunk, chunk_seconds=chunk_seconds, until=until, progress=progress)
    return X, inv


def industry_affinity_column(
    inv: Inventory, rows: pd.DataFrame, y: np.ndarray, fit: np.ndarray, folds: int, prior: float, seed: int
) -> tuple[np.ndarray, IndustryAffinity]:
    """The affinity feature for every row and the table serving uses (fitted on the ``fit`` rows).

    Fit rows get out-of-fold values (folds by request), so the click model never sees a row's own
    label through this feature; later rows get the full table, as serving does.
    """
    a = [inv.profile(m).industry for m in rows["member_id"]]
    b = [inv.profile(c).industry for c in rows["item_id"]]
    fit_idx = np.flatnonzero(fit)
    table = IndustryAffinity.fit([a[i] for i in fit_idx], [b[i] for i in fit_idx], y[fit_idx], prior)
    col = np.array([table.get(x, z) for x, z in zip(a, b, strict=True)])
    requests = pd.factorize(rows["request_id"].to_numpy()[fit_idx])[0]
    fold = np.random.default_rng(seed).integers(0, folds, requests.max(initial=0) + 1)[requests]
    for f in range(folds):
        held, rest = fit_idx[fold == f], fit_idx[fold != f]
        part = IndustryAffinity.fit([a[i] for i in rest], [b[i] for i in rest], y[rest], prior)
        col[held] = [part.get(a[i], b[i]) for i in held]
    return col, table


def _both_classes(y: np.ndarray) -> bool:
    return len(y) > 0 and y.min() != y.max()


def train(traffic: LoggedTraffic, params: dict[str, Any], progress: Progress) -> TrainedFpr:
    started = time.perf_counter()
    cfg = load_settings(params)
    rows = traffic.rows("member")
    y = rows["clicked"].to_numpy().astype(int)
    if not _both_classes(y):
        raise ValueError(f"people training needs clicked and not-clicked member-card rows; got {len(rows)} rows")
    emb, losses = fit_embeddings(traffic, cfg["line"], int(cfg["candidates"]["line_neighbours"]), progress)
    X, inv = replay_features(traffic, rows, emb, float(cfg["training"]["chunk_seconds"]), progress)

    ts = rows["timestamp"].to_numpy()
    vf = float(cfg["training"]["validation_fraction"])
    cut_fit, cut_cal = np.quantile(ts, 1.0 - vf), np.quantile(ts, 1.0 - vf / 2.0)
    fit_m, cal_m, test_m = ts < cut_fit, (ts >= cut_fit) & (ts < cut_cal), ts >= cut_cal
    if not _both_classes(y[fit_m]):
        fit_m = fit_m | cal_m | test_m  # too little traffic for a time split: fit on everything
    if not _both_classes(y[cal_m]):
        cal_m = fit_m  # in-sample Platt (two parameters) beats no calibration; metrics say so below
    tcfg = cfg["training"]
    col, affinity = industry_affinity_column(
        inv,
        rows,
        y,
        fit_m,
        int(tcfg["affinity_folds"]),
        float(tcfg["affinity_prior"]),
        int(cfg["model"]["random_state"]),
    )
    X[:, FEATURES.index("industry_affinity")] = col
    task = progress.add_task("fitting the people click model", total=2)
    model = PeopleClickModel(**{k: v for k, v in cfg["model"].items()}).fit(X[fit_m], y[fit_m])
    progress.update(task, advance=1)
    calibrator = PlattCalibrator().fit(model.decision_function(X[cal_m]), y[cal_m])
    progress.update(task, advance=1)
    scorer = PeopleScorer(model, calibrator, emb, affinity, version=f"people-line-{cfg['model']['kind']}-v1")

    p = calibrator.predict(model.decision_function(X[test_m]))
    cn = X[test_m, FEATURES.index("common_connections")]
    ok = _both_classes(y[test_m])
    nan = float("nan")
    metrics = {
        **held_out_metrics(y[test_m], p),
        "auc_common_neighbours": float(roc_auc_score(y[test_m], cn)) if ok else nan,
        "ctr_test": float(y[test_m].mean()) if test_m.any() else nan,
        "rows_fit": float(fit_m.sum()),
        "rows_calibration": float(cal_m.sum()),
        "calibrated_in_sample": float(cal_m is fit_m),
        "rows_test": float(test_m.sum()),
        "line_members": float(len(emb.ids)),
        "line_final_loss": losses[-1] if losses else float("nan"),
        "train_seconds": time.perf_counter() - started,
    }
    return TrainedFpr(scorer=scorer, metrics=metrics, params=cfg)
