"""Trains the courses scorer from logged course impressions: NCF and GLMix, a blend, then calibration.

Each logged course row gets its features from the inventory as it stood when it was served
(``rankers.training.replay``). Rows are split in time: the earliest fit NCF and GLMix, the next
(validation) fit the logistic blend of their logits, the latest fit Platt scaling and give the reported
metrics (out-of-fold over two interleaved halves, so the calibration is not scored on its own rows).
With ``refit_full`` the two models are then refitted on every row, keeping the blend and calibration.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from feedrank.contracts import ItemType
from rankers.calibration import PlattCalibrator, held_out_metrics
from rankers.courses.features import DENSE, CourseFeaturizer, raw_features
from rankers.courses.glmix import GLMix
from rankers.courses.ncf import NeuMFClassifier
from rankers.courses.ranker import CoursesScorer
from rankers.courses.settings import load_settings
from rankers.inventory import Inventory
from rankers.training import LoggedTraffic, Progress, TrainedFpr, replay


def point_in_time_rows(traffic: LoggedTraffic, progress: Progress | None = None) -> tuple[pd.DataFrame, Inventory]:
    """Course log rows with their dense features, member industry and course category at serving time."""
    rows = traffic.rows(ItemType.COURSE.value)
    dense = np.zeros((len(rows), len(DENSE)))
    industry = np.empty(len(rows), dtype=object)
    category = np.empty(len(rows), dtype=object)
    items = rows["item_id"].astype(str).to_numpy()

    def on_chunk(inv: Inventory, chunk: pd.DataFrame) -> None:
        groups: defaultdict[str, list[int]] = defaultdict(list)
        for pos, member in zip(chunk.index, chunk["member_id"], strict=True):
            groups[member].append(pos)
        for member, pos in groups.items():
            d, ind, cats = raw_features(inv, member, items[pos].tolist())
            dense[pos] = d
            industry[pos] = ind
            category[pos] = cats

    final = replay(traffic.events, rows, on_chunk, progress=progress)
    frame = pd.DataFrame(dense, columns=list(DENSE))
    frame["industry"] = industry
    frame["category"] = category
    frame["member"] = rows["member_id"].astype(str).to_numpy()
    frame["course"] = rows["item_id"].astype(str).to_numpy()
    frame["label"] = rows["clicked"].astype(int).to_numpy()
    frame["timestamp"] = rows["timestamp"].to_numpy(dtype=np.float64)
    frame["shown_before"] = np.log1p(frame.groupby(["member", "course"]).cumcount().to_numpy(dtype=np.float64))
    return frame, final


def _expand(names: list[str], columns: list[str]) -> list[str]:
    """Feature names, where ``prefix=*`` stands for every column starting with ``prefix=``."""
    out: list[str] = []
    for n in names:
        out += [c for c in columns if c.startswith(n[:-1])] if n.endswith("=*") else [n]
    return out


def _metrics(y: np.ndarray, raw: np.ndarray, prefix: str, C: float) -> dict[str, float]:
    """AUC, log loss and O/E of Platt-calibrated ``raw``, out of fold over two interleaved halves."""
    p = np.empty(len(y))
    idx = np.arange(len(y))
    for fold in (0, 1):
        fit, held = idx % 2 != fold, idx % 2 == fold
        if len(np.unique(y[fit])) < 2:
            return {}
        p[held] = PlattCalibrator(C).fit(raw[fit], y[fit]).predict(raw[held])
    if len(np.unique(y)) < 2:
        return {}
    return {f"{prefix}{name}": value for name, value in held_out_metrics(y, p, rank_score=raw).items()}


def _slice_with_both(y: np.ndarray, lo: int, hi: int, floor: int) -> int:
    """Start of a slice ending at ``hi`` that holds both labels, moving ``lo`` earlier (to ``floor``) if needed."""
    while lo > floor and len(np.unique(y[lo:hi])) < 2:
        lo = max(floor, lo - max(1, (hi - lo)))
    return lo


def train(traffic: LoggedTraffic, params: dict[str, Any], progress: Progress) -> TrainedFpr:
    cfg = load_settings(params)
    frame, _ = point_in_time_rows(traffic, progress)
    y = frame["label"].to_numpy()
    if len(frame) < 20 or y.sum() < 5 or y.sum() == len(y):
        raise ValueError(
            f"courses: {len(frame)} course impressions with {int(y.sum())} clicks is too little to train on"
        )
    step = progress.add_task("courses: GLMix, blend, calibration", total=4)

    featurizer = CourseFeaturizer(crosses=bool(cfg["glmix"]["crosses"])).fit(frame)
    X = pd.DataFrame(featurizer.transform(frame), columns=featurizer.columns_)
    X["member"] = frame["member"].to_numpy()
    X["course"] = frame["course"].to_numpy()

    side = ["industry", "category"] if cfg["ncf"]["side_features"] else []
    ncf_ids = frame[["member", "course", *side]].to_numpy()
    n = len(frame)
    s = cfg["split"]
    cut2 = int(n * (1 - s["calib_frac"]))
    cut1 = int(n * (1 - s["calib_frac"] - s["valid_frac"]))
    cut2 = _slice_with_both(y, cut2, n, 1)
    cut1 = _slice_with_both(y, min(cut1, cut2 - 1), cut2, 1)
    train_sl, valid_sl, calib_sl = slice(0, cut1), slice(cut1, cut2), slice(cut2, n)

    def make_glmix() -> GLMix:
        g = cfg["glmix"]
        return GLMix(
            member_features=_expand(list(g["member_features"]), featurizer.columns_),
            course_features=_expand(list(g["course_features"]), featurizer.columns_),
            l2_global=g["l2_global"],
            l2_member=g["l2_member"],
            l2_course=g["l2_course"],
            passes=g["passes"],
            newton_steps=g["newton_steps"],
        )

    def make_ncf() -> NeuMFClassifier:
        c = cfg["ncf"]
        return NeuMFClassifier(
            gmf_dim=c["gmf_dim"],
            mlp_dim=c["mlp_dim"],
            layers=tuple(c["layers"]),
            epochs=c["epochs"],
            lr=c["lr"],
            batch_size=c["batch_size"],
            weight_decay=c["weight_decay"],
            dense_weight_decay=c["dense_weight_decay"],
            validation_fraction=c["validation_fraction"],
            negatives=c["negatives"],
            negative_weight=c["negative_weight"],
            unknown_rate=c["unknown_rate"],
            seed=c["seed"],
        )

    def fit_ncf(sl: slice, label: str) -> NeuMFClassifier:
        task = progress.add_task(f"courses: NCF epochs ({label})", total=cfg["ncf"]["epochs"])
        ids = ncf_ids[sl]
        return make_ncf().fit(ids, y[sl], on_epoch=lambda _e, _loss: progress.update(task, advance=1))

    glmix = make_glmix().fit(X.iloc[train_sl], y[train_sl])
    progress.update(step, advance=1)
    ncf = fit_ncf(train_sl, "held-out fit")

    def logits(g: GLMix, m: NeuMFClassifier, sl: slice) -> np.ndarray:
        return np.column_stack([m.decision_function(ncf_ids[sl]), g.decision_function(X.iloc[sl])])

    Lv = logits(glmix, ncf, valid_sl)
    blender = LogisticRegression(C=cfg["blend"]["C"]).fit(Lv, y[valid_sl])
    blend = (float(blender.coef_[0, 0]), float(blender.coef_[0, 1]), float(blender.intercept_[0]))
    progress.update(step, advance=1)

    Lc = logits(glmix, ncf, calib_sl)
    yc = y[calib_sl]
    raw_c = blend[0] * Lc[:, 0] + blend[1] * Lc[:, 1] + blend[2]
    C = float(cfg["calibration"]["C"])
    metrics: dict[str, float] = {}
    metrics.update(_metrics(yc, Lc[:, 0], "ncf_", C))
    metrics.update(_metrics(yc, Lc[:, 1], "glmix_", C))
    metrics.update(_metrics(yc, raw_c, "", C))
    metrics.update(_metrics(yc, X["popularity"].to_numpy()[calib_sl], "popularity_", C))
    calibrator = PlattCalibrator(C).fit(raw_c, yc)
    progress.update(step, advance=1)

    if s["refit_full"]:
        glmix = make_glmix().fit(X, y)
        ncf = fit_ncf(slice(0, n), "all rows")
    progress.update(step, advance=1)
    metrics.update(
        {
            "rows": float(n),
            "clicks": float(y.sum()),
            "train_rows": float(cut1),
            "valid_rows": float(cut2 - cut1),
            "calib_rows": float(n - cut2),
            "blend_w_ncf": blend[0],
            "blend_w_glmix": blend[1],
        }
    )
    scorer = CoursesScorer(featurizer, glmix, ncf, blend, calibrator)
    return TrainedFpr(scorer, metrics, params=cfg)
