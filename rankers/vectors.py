"""Numeric helpers the rankers and evaluation share: a logistic function that never overflows, row
normalisation, and O/E (here rather than in rankers.calibration so evaluation need not load scikit-learn)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def sigmoid(x: npt.ArrayLike) -> np.ndarray:
    """1 / (1 + e^-x), written with tanh so large |x| neither overflows nor warns."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x)))


def unit_rows(x: npt.ArrayLike, dtype: npt.DTypeLike = None) -> np.ndarray:
    """Rows (the last axis) scaled to unit length, for cosine similarity by dot product; zero rows stay
    zero (similar to nothing)."""
    x = np.asarray(x, dtype=dtype)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def observed_over_expected(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """O/E: > 1 means the model under-predicts."""
    return float(np.sum(y) / max(float(np.sum(p)), 1e-12))
