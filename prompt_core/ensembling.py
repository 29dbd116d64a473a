"""Combining several models' class scores."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities from ``logits`` along ``axis`` (shifted by the maximum, so large logits do not overflow)."""
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def ensemble(logits: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """The weighted mean of several models' logits, as PET's ``mean``/``wmean`` reductions take it.

    Args:
        logits: one (N × classes) array per model, rows in the same order.
        weights: one non-negative weight per model with a positive sum (PET: each model's accuracy
            on the training set before training); None weighs them equally.

    Returns:
        An (N × classes) array of logits.
    """
    if not logits:
        raise ValueError("nothing to ensemble")
    stacked = np.stack([np.asarray(l, dtype=np.float64) for l in logits])
    w = np.ones(len(logits)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(logits),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need one non-negative weight per model with a positive sum, got {list(w)}")
    return np.average(stacked, axis=0, weights=w)


def accuracy(logits: np.ndarray, labels: Sequence[int]) -> float:
    """Share of rows whose highest logit is the true label.

    Args:
        logits: (N × classes) scores.
        labels: N class indices.

    Returns:
        The accuracy; NaN for no rows.
    """
    labels = np.asarray(labels)
    return float((np.asarray(logits).argmax(-1) == labels).mean()) if len(labels) else float("nan")
