"""iPET's step between generations: peers label the pool, confident examples are kept.

Follows PET's ``generate_ipet_train_set``: a random fraction of the *other* models is
combined (weighted by each model's accuracy on the training set before training), and the new
examples are drawn per class with the ensemble's probability as weight. PET splits them over the
classes like the gold labels; a few-shot gold set is balanced by construction while a pool rarely
is, so by default the split follows the ensemble's estimate of the pool's own class distribution
(its mean predicted probability), and no class gives more than its candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import numpy as np

from .ensembling import softmax


def new_examples(gold_size: int, generation: int, growth: float, zero_shot_base: int) -> int:
    """How many pseudo-labeled examples generation ``g`` adds: base·d^g minus the gold set.

    The base is the gold set's size, or ``zero_shot_base`` when there is no gold set.
    """
    return max(0, int((gold_size or zero_shot_base) * growth**generation) - gold_size)


def per_label_counts(total: int, shares: Sequence[float]) -> list[int]:
    """Split ``total`` over labels in proportion to ``shares`` (gold counts, or the pool's estimated
    class mass); equally when they are all zero."""
    counts = np.asarray(shares, dtype=float)
    share = counts / counts.sum() if counts.sum() > 0 else np.full(len(counts), 1 / len(counts))
    raw = share * total
    out = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - out))[: total - out.sum()]:  # largest remainders get the rest
        out[i] += 1
    return out.tolist()


def pick_peers(peer_weights: Sequence[float], fraction: float, reduction: Literal["mean", "wmean"],
               rng: np.random.Generator) -> tuple[list[int], list[float] | None]:
    """A random ``fraction`` of the peers (at least one), and their ensemble weights (None: plain mean)."""
    if not peer_weights:
        raise ValueError("iPET needs at least two models per generation, so every model has a peer")
    k = max(1, round(len(peer_weights) * fraction))
    chosen = sorted(rng.choice(len(peer_weights), size=k, replace=False).tolist())
    weights = [peer_weights[i] for i in chosen] if reduction == "wmean" else None
    if weights is not None and sum(weights) <= 0:
        weights = None  # every peer scored 0 before training: fall back to a plain mean
    return chosen, weights


def select_confident(logits: np.ndarray, counts: Sequence[int], rng: np.random.Generator,
                     method: Literal["sample", "top"] = "sample", n_most_likely: int | None = None,
                     min_confidence: float | None = None, exclude: np.ndarray | None = None) -> np.ndarray:
    """Row indices to pseudo-label: ``counts[c]`` rows predicted as class ``c``.

    ``sample`` draws without replacement with the predicted probability as weight (PET);
    ``top`` takes the most confident. Candidates can be limited to the ``n_most_likely`` per
    class and to a probability of at least ``min_confidence``. A class with too few
    candidates contributes all it has.
    """
    found = collect_candidates([(logits, exclude)], len(counts), min_confidence)
    return draw(found, counts, rng, method, n_most_likely)


@dataclass
class Candidates:
    """Each class's candidate rows (predicted as it, not excluded, confident enough) with their
    confidence, and the ensemble's probability mass per class over every row it saw."""

    rows: list[np.ndarray]
    confidence: list[np.ndarray]
    mass: np.ndarray  # its share per class is the pool's estimated class distribution


def collect_candidates(chunks: Iterable[tuple[np.ndarray, np.ndarray | None]], num_labels: int,
                       min_confidence: float | None = None) -> Candidates:
    """The candidates of (logits, exclude) chunks of consecutive rows, e.g. streamed from disk.

    Only each class's candidates (row index, confidence) are kept, not the logits, so a pool of
    any size fits.
    """
    rows: list[list[np.ndarray]] = [[] for _ in range(num_labels)]
    scores: list[list[np.ndarray]] = [[] for _ in range(num_labels)]
    mass = np.zeros(num_labels)
    offset = 0
    for logits, exclude in chunks:
        probs = softmax(np.asarray(logits, dtype=np.float64))
        predicted, confidence = probs.argmax(-1), probs.max(-1)
        allowed = np.ones(len(probs), dtype=bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
        mass += probs[allowed].sum(axis=0)
        if min_confidence is not None:
            allowed &= confidence >= min_confidence
        for label in range(num_labels):
            found = np.flatnonzero(allowed & (predicted == label))
            rows[label].append(found + offset)
            scores[label].append(confidence[found])
        offset += len(probs)
    join = lambda parts, dtype: np.concatenate(parts) if parts else np.empty(0, dtype=dtype)  # noqa: E731
    return Candidates([join(r, int) for r in rows], [join(c, float) for c in scores], mass)


def draw(candidates: Candidates, counts: Sequence[int], rng: np.random.Generator,
         method: Literal["sample", "top"] = "sample", n_most_likely: int | None = None) -> np.ndarray:
    """``counts[c]`` of class ``c``'s candidates (all it has when fewer), sorted row indices."""
    selected = []
    for label, count in enumerate(counts):
        order = np.argsort(-candidates.confidence[label], kind="stable")[:n_most_likely or None]
        rows, confidence = candidates.rows[label][order], candidates.confidence[label][order]
        take = min(count, len(rows))
        if take == 0:
            continue
        if method == "top":
            selected.append(rows[:take])
        else:
            selected.append(rng.choice(rows, size=take, replace=False, p=confidence / confidence.sum()))
    return np.sort(np.concatenate(selected)) if selected else np.empty(0, dtype=int)
