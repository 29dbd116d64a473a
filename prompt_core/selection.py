"""iPET's step between generations: peers label the pool, confident examples are kept.

Follows PET's ``generate_ipet_train_set``: a random fraction of the *other* models is
combined (weighted by each model's accuracy on the training set before training), and each
class gets a share of the new examples in proportion to the gold label distribution, drawn
with the ensemble's probability as weight.
"""

from __future__ import annotations

from typing import Iterable, Literal, Sequence

import numpy as np

from .ensembling import softmax


def new_examples(gold_size: int, generation: int, growth: float, zero_shot_base: int) -> int:
    """How many pseudo-labeled examples generation ``g`` adds: base·d^g minus the gold set.

    The base is the gold set's size, or ``zero_shot_base`` when there is no gold set.
    """
    return max(0, int((gold_size or zero_shot_base) * growth**generation) - gold_size)


def per_label_counts(total: int, gold_counts: Sequence[int]) -> list[int]:
    """Split ``total`` over labels like the gold distribution (equally when there is no gold)."""
    counts = np.asarray(gold_counts, dtype=float)
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
    return select_confident_chunks([(logits, exclude)], counts, rng, method, n_most_likely, min_confidence)


def select_confident_chunks(chunks: Iterable[tuple[np.ndarray, np.ndarray | None]], counts: Sequence[int],
                            rng: np.random.Generator, method: Literal["sample", "top"] = "sample",
                            n_most_likely: int | None = None, min_confidence: float | None = None) -> np.ndarray:
    """``select_confident`` over (logits, exclude) chunks of consecutive rows, e.g. streamed from disk.

    Only each class's candidates (row index, confidence) are kept, not the logits, so a pool of
    any size fits; the result equals ``select_confident`` on the concatenated chunks.
    """
    rows: list[list[np.ndarray]] = [[] for _ in counts]
    scores: list[list[np.ndarray]] = [[] for _ in counts]
    offset = 0
    for logits, exclude in chunks:
        probs = softmax(np.asarray(logits, dtype=np.float64))
        predicted, confidence = probs.argmax(-1), probs.max(-1)
        allowed = np.ones(len(probs), dtype=bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
        if min_confidence is not None:
            allowed &= confidence >= min_confidence
        for label in range(len(counts)):
            found = np.flatnonzero(allowed & (predicted == label))
            rows[label].append(found + offset)
            scores[label].append(confidence[found])
        offset += len(probs)
    selected = []
    for label, count in enumerate(counts):
        candidates = np.concatenate(rows[label]) if rows[label] else np.empty(0, dtype=int)
        confidence = np.concatenate(scores[label]) if scores[label] else np.empty(0)
        order = np.argsort(-confidence, kind="stable")[:n_most_likely or None]
        candidates, confidence = candidates[order], confidence[order]
        take = min(count, len(candidates))
        if take == 0:
            continue
        if method == "top":
            selected.append(candidates[:take])
        else:
            selected.append(rng.choice(candidates, size=take, replace=False, p=confidence / confidence.sum()))
    return np.sort(np.concatenate(selected)) if selected else np.empty(0, dtype=int)
