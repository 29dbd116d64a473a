"""Which unlabeled rows to ask a person about (active learning), as plain numpy.

iPET trusts its own guesses; a person's few labels are worth most where the PVP models disagree
(``disagreement``: vote entropy) or the weighted ensemble is least sure (``uncertainty``: the
margin between its two likeliest labels). ``random`` is the control. With ``diversity`` the rows
are drawn from the uncertain top by greedy farthest-first over the texts' bag-of-words vectors,
so twenty near-duplicates of one confusing headline do not use up the whole budget. With ``balance``
an equal share of the rows comes from each label the ensemble guesses: the rows models split on
are rarely balanced (16 of SST-2's 20 were one class on a held-out draw), and a gold set made
lopsided by its answers skews the models trained on it.
"""

from __future__ import annotations

import re
import zlib
from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .ensembling import ensemble, softmax

Strategy = Literal["disagreement", "uncertainty", "random"]
STRATEGIES: tuple[Strategy, ...] = ("disagreement", "uncertainty", "random")
CANDIDATES_PER_ROW = 5  # diversity draws from the 5·rows most uncertain rows
HASH_DIMENSIONS = 2**14  # hashed bag of words: wide enough that unrelated texts rarely share a bucket


class PickConfig(BaseModel):
    """How rows are picked: the settings a pick's content key covers (not when or where to ask)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int = Field(20, ge=1, le=500, description="how many rows to ask about")
    strategy: Strategy = Field("disagreement", description="disagreement: vote entropy across the models; "
                                                           "uncertainty: the ensemble's margin; random: a control")
    diversity: bool = Field(True, description="no near-duplicates: farthest-first over the uncertain top's texts")
    balance: bool = Field(False, description="an equal share of the rows from each label the ensemble guesses "
                                             "(not used by random)")

    def key(self) -> dict:
        """The settings a pick's content key covers; ``balance`` only when on, so earlier requests keep their keys."""
        return self.model_dump(include={"rows", "strategy", "diversity", *(["balance"] if self.balance else [])})


def vote_entropy(logits: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Per row, the entropy of the models' (weighted) votes for their top label: 0 when all agree.

    Args:
        logits: one (N × classes) array per model, rows in the same order.
        weights: one weight per model's vote; None weighs them equally.
    """
    votes = np.stack([np.asarray(l).argmax(-1) for l in logits])  # models × N
    w = np.ones(len(logits)) if weights is None else np.asarray(weights, dtype=np.float64)
    classes = np.asarray(logits[0]).shape[-1]
    shares = np.stack([((votes == c) * w[:, None]).sum(0) for c in range(classes)], -1) / w.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(shares > 0, shares * np.log(shares), 0.0).sum(-1)


def margin(probabilities: np.ndarray) -> np.ndarray:
    """Per row, the likeliest label's probability less the second's: small means unsure."""
    top2 = np.sort(probabilities, axis=-1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def uncertainty_order(logits: Sequence[np.ndarray], weights: Sequence[float] | None,
                      strategy: Strategy, rng: np.random.Generator) -> np.ndarray:
    """Row indices, most worth asking first. Vote entropy takes few values with few models, so its
    ties are broken by the ensemble's margin; ``random`` is a shuffle."""
    n = len(logits[0])
    if strategy == "random":
        return rng.permutation(n)
    small_margin = margin(softmax(ensemble(logits, weights)))
    if strategy == "uncertainty":
        return np.lexsort((np.arange(n), small_margin))
    return np.lexsort((np.arange(n), small_margin, -vote_entropy(logits, weights)))


def text_vectors(texts: Sequence[str]) -> np.ndarray:
    """L2-normalised hashed counts of each text's lower-cased words and word pairs: near-duplicates
    are close, unrelated texts nearly orthogonal. No model is needed, so picking stays cheap."""
    vectors = np.zeros((len(texts), HASH_DIMENSIONS), dtype=np.float32)
    for i, text in enumerate(texts):
        words = re.findall(r"\w+", text.lower())
        for gram in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
            vectors[i, zlib.crc32(gram.encode()) % HASH_DIMENSIONS] += 1.0
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def farthest_first(vectors: np.ndarray, k: int) -> list[int]:
    """Greedy farthest-first traversal: start at row 0 (the most uncertain), then repeatedly add the
    row farthest (in cosine distance) from every row picked so far; ties go to the earlier row."""
    picked = [0]
    nearest = 1.0 - vectors @ vectors[0]
    while len(picked) < min(k, len(vectors)):
        nearest[picked] = -np.inf
        nxt = int(np.argmax(nearest))
        picked.append(nxt)
        nearest = np.minimum(nearest, 1.0 - vectors @ vectors[nxt])
    return picked


def quotas(order: np.ndarray, guess: np.ndarray, rows: int, classes: int) -> list[int]:
    """How many of ``rows`` to pick among each label's guessed rows: equal shares, the remainder to the
    labels whose first row comes earliest in ``order``, and a label with too few rows leaves the rest
    to the others."""
    available = np.bincount(guess, minlength=classes)
    first = [int(np.argmax(guess[order] == c)) for c in range(classes)]  # only read while a label has rows
    quota = [0] * classes
    for _ in range(min(rows, len(order))):
        open_ = [c for c in range(classes) if quota[c] < available[c]]
        quota[min(open_, key=lambda c: (quota[c], first[c]))] += 1
    return quota


def pick_rows(logits: Sequence[np.ndarray], weights: Sequence[float] | None, texts: Sequence[str], rows: int,
              strategy: Strategy, diversity: bool, seed: int = 0, balance: bool = False) -> list[int]:
    """The pool rows to ask a person about, most worth asking first.

    Args:
        logits: one (N × classes) array per model of the stage, pool rows in the same order.
        weights: each model's weight in the ensemble; None weighs them equally.
        texts: each pool row's text (its fields joined), for ``diversity``.
        rows: how many to pick (fewer if the pool is smaller).
        strategy: ``disagreement``, ``uncertainty`` or ``random``.
        diversity: spread the picks over the uncertain top (not used by ``random``).
        seed: the ``random`` strategy's seed.
        balance: an equal share of ``rows`` from each label the ensemble guesses, each share picked
            as above among that label's rows (not used by ``random``).
    """
    order = uncertainty_order(logits, weights, strategy, np.random.default_rng(seed))
    if strategy == "random" or not balance:
        return spread(order, texts, rows, diversity and strategy != "random")
    guess = guesses(logits, weights)[0]
    picked = [i for c, n in enumerate(quotas(order, guess, rows, np.asarray(logits[0]).shape[-1]))
              for i in spread(order[guess[order] == c], texts, n, diversity)]
    rank = np.argsort(order)  # each row's place in the order: most worth asking first, whatever its label
    return sorted(picked, key=lambda i: rank[i])


def spread(order: np.ndarray, texts: Sequence[str], rows: int, diversity: bool) -> list[int]:
    """The first ``rows`` of ``order``, or with ``diversity`` farthest-first among its first ``rows`` × 5."""
    if not diversity or not rows:
        return [int(i) for i in order[:rows]]
    top = order[:rows * CANDIDATES_PER_ROW]
    return [int(top[i]) for i in farthest_first(text_vectors([texts[i] for i in top]), rows)]


def guesses(logits: Sequence[np.ndarray], weights: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    """The weighted ensemble's label index and its probability, per row: what the form shows."""
    probabilities = softmax(ensemble(logits, weights))
    return probabilities.argmax(-1), probabilities.max(-1)
