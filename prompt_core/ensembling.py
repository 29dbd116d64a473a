"""Combining several models' class scores."""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def ensemble(
    logits: Sequence[np.ndarray],
    weights: Sequence[float] | None = None,
    over: Literal["logits", "probs"] = "logits",
) -> np.ndarray:
    """Weighted mean of several (N × classes) arrays; returns logits-like scores.

    ``over="logits"`` averages logits, as PET's ``mean``/``wmean`` reductions do (weights are
    each model's accuracy on the training set before training). ``over="probs"`` averages
    probabilities and returns their log, so ``softmax`` of the result is the mean probability.
    """
    if not logits:
        raise ValueError("nothing to ensemble")
    if over not in ("logits", "probs"):
        raise ValueError(f"over must be 'logits' or 'probs', not {over!r}")
    stacked = np.stack([np.asarray(l, dtype=np.float64) for l in logits])
    w = np.ones(len(logits)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(logits),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need one non-negative weight per model with a positive sum, got {list(w)}")
    if over == "probs":
        return np.log(np.average(softmax(stacked), axis=0, weights=w) + 1e-12)
    return np.average(stacked, axis=0, weights=w)


def accuracy(logits: np.ndarray, labels: Sequence[int]) -> float:
    labels = np.asarray(labels)
    return float((np.asarray(logits).argmax(-1) == labels).mean()) if len(labels) else float("nan")
