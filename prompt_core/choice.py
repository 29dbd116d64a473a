"""Scoring candidate label words and phrases from a score matrix, for ``ipet suggest``.

Both learners reduce to the same shape here: one pattern's score of every candidate for every row
(the similarity learner's cosine, the cloze learner's log-probability at the mask), labeled rows and
a pool sample apart. A verbalizer picks candidates per label; a class's score is the mean of its
candidates' columns, as the learners themselves average a label's words or phrases. Numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .ensembling import softmax


class SuggestError(ValueError):
    """Nothing can be suggested: a label without candidates, a learner without a verbalizer."""


@dataclass(frozen=True)
class Candidate:
    """A label word (cloze) or label phrase (similarity) proposed for one label.

    Args:
        label: the label's index.
        text: the word or phrase.
        origin: where it came from (``label name``, ``term``, ``terms``, ``neighbour``, ``word``).
    """

    label: int
    text: str
    origin: str


@dataclass(frozen=True)
class Scores:
    """One pattern's scores of every candidate: (labeled rows × candidates) and (pool rows ×
    candidates). Class logits are the mean of a class's candidate columns ÷ ``temperature``
    (the similarity learner's cosine temperature; 1 for log-probabilities)."""

    labeled: np.ndarray
    pool: np.ndarray
    temperature: float = 1.0


@dataclass(frozen=True)
class Fit:
    """How one verbalizer does on a pattern's scores.

    Args:
        accuracy: on the labeled rows; None without labeled rows.
        likelihood: mean log-probability of the true class on the labeled rows; None without them.
            Smooth where accuracy moves in steps of 1/n, so it overfits 20 rows less when choosing
            among hundreds of candidates.
        balance: entropy of the predicted classes on the pool sample ÷ its maximum (1: spread evenly,
            0: one class for every row).
        margin: mean gap between the two most probable classes on the pool sample (0 … 1).
    """

    accuracy: float | None
    likelihood: float | None
    balance: float
    margin: float

    @property
    def key(self) -> tuple[float, ...]:
        """Larger is better: likelihood plus balance (a phrase that draws every input scores the labeled
        rows well and the pool badly), then accuracy; with no labels, the pool alone: spread across the
        classes times confidence, which is a weaker signal."""
        if self.likelihood is None:
            return (self.balance * self.margin,)
        return (self.likelihood + self.balance, self.accuracy)

    @property
    def score(self) -> float:
        return self.key[0]


def class_logits(matrix: np.ndarray, choice: Sequence[Sequence[int]], temperature: float) -> np.ndarray:
    """(rows × labels): each label's mean candidate score ÷ ``temperature``."""
    return np.stack([matrix[:, list(c)].mean(axis=1) for c in choice], axis=1) / temperature


def fit(scores: Scores, choice: Sequence[Sequence[int]], targets: Sequence[int]) -> Fit:
    """The ``Fit`` of the verbalizer that gives label ``l`` the candidates ``choice[l]``."""
    pool = class_logits(scores.pool, choice, scores.temperature)
    counts = np.bincount(pool.argmax(axis=1), minlength=len(choice)) / max(1, len(pool))
    balance = -sum(p * math.log(p) for p in counts if p > 0) / math.log(len(choice))
    top2 = np.sort(softmax(pool.astype(np.float64)), axis=1)[:, -2:] if len(pool) else np.zeros((1, 2))
    accuracy = likelihood = None
    if len(targets):
        labeled = class_logits(scores.labeled, choice, scores.temperature).astype(np.float64)
        rows = np.arange(len(targets))
        accuracy = float((labeled.argmax(axis=1) == np.asarray(targets)).mean())
        likelihood = float(np.log(softmax(labeled)[rows, np.asarray(targets)] + 1e-12).mean())
    return Fit(accuracy, likelihood, max(0.0, float(balance)), float((top2[:, 1] - top2[:, 0]).mean()))


def choose(scores: Scores, candidates: Sequence[Candidate], targets: Sequence[int], n_labels: int,
           excluded: frozenset[str] = frozenset(), rounds: int = 3, names: Sequence[str] = (),
           ) -> tuple[list[int], dict[int, Fit]]:
    """One candidate per label, by coordinate ascent on ``Fit.key``.

    Starting from each label's best candidate alone (its mean score on the label's examples minus
    on the others; without labels, the first given), each label in turn takes the candidate that
    is best with the others' current ones, until nothing changes.

    Args:
        scores: the pattern's scores; columns follow ``candidates``.
        candidates: every label's candidates.
        targets: the labeled rows' label indices (empty: pool only).
        n_labels: how many labels.
        excluded: texts not to choose (used by an earlier PVP with this pattern).
        rounds: at most this many passes over the labels.
        names: the labels' names, for the error that names a label left without candidates.

    Returns:
        The chosen candidate index per label, and each candidate's ``Fit`` with the other labels'
        final choices (the ranking ``ipet suggest`` prints).
    """
    options = [[i for i, c in enumerate(candidates) if c.label == label and c.text not in excluded]
               for label in range(n_labels)]
    if not all(options):
        empty = [names[l] if names else l for l, o in enumerate(options) if not o]
        raise SuggestError(f"no candidates left for label(s) {empty}")
    choice = [max(o, key=lambda i: _alone(scores.labeled[:, i], targets, label)) if len(targets) else o[0]
              for label, o in enumerate(options)]
    fits: dict[int, Fit] = {}
    for _ in range(rounds):
        changed = False
        for label, opts in enumerate(options):
            for i in opts:
                fits[i] = fit(scores, [[i] if l == label else [c] for l, c in enumerate(choice)], targets)
            best = max(opts, key=lambda i: fits[i].key)
            changed |= best != choice[label]
            choice[label] = best
        if not changed:
            break
    return choice, fits


def _alone(column: np.ndarray, targets: Sequence[int], label: int) -> float:
    mine = np.asarray(targets) == label
    return float(column[mine].mean() - column[~mine].mean()) if mine.any() and (~mine).any() else 0.0


def likelihood_ratios(log_probs: np.ndarray, targets: Sequence[int], n_labels: int, pool_log_probs: np.ndarray,
                      shortlist: int = 200) -> np.ndarray:
    """PETAL's score of each word for each label (Schick, Schmid and Schütze 2020; ``petal.py`` of
    the PET reference): the word's probability at the mask read as a classifier of "this label or
    not", scored by its log-likelihood ratio on the labeled rows, positives weighted up to the
    negatives' count.

    As in PETAL, only a shortlist per label is scored; here it is chosen with the pool as the
    background distribution: the words whose log-probability on the label's examples rises most above
    their mean probability on the pool, so a word the pattern asks for whatever the input (a
    frequent word at that slot) does not crowd out the label's own.

    Args:
        log_probs: (labeled rows × words) log-probabilities at the mask, normalised over the vocabulary.
        targets: each labeled row's label index.
        n_labels: how many labels.
        pool_log_probs: (pool rows × words), the same for the pool sample.
        shortlist: words scored per label; the others get −inf.

    Returns:
        (labels × words) scores; higher means a better label word.
    """
    p = np.clip(np.exp(log_probs.astype(np.float64)), 1e-12, 1 - 1e-7)
    background = np.log(np.exp(pool_log_probs.astype(np.float64)).mean(axis=0) + 1e-12)
    targets = np.asarray(targets)
    out = np.full((n_labels, log_probs.shape[1]), -np.inf)
    for label in range(n_labels):
        pos = targets == label
        if not pos.any() or pos.all():
            raise SuggestError(f"label index {label}: likelihood ratios need labeled examples of it and of others")
        lift = np.log(p[pos]).mean(axis=0) - background
        keep = np.argsort(-lift, kind="stable")[:shortlist]
        scale = (~pos).sum() / pos.sum()
        positive = scale * (np.log(p[pos][:, keep]) - np.log1p(-p[pos][:, keep])).sum(axis=0)
        negative = (np.log1p(-p[~pos][:, keep]) - np.log(p[~pos][:, keep])).sum(axis=0)
        out[label, keep] = positive + negative
    return out


def top_words(ratios: np.ndarray, top: int, excluded: frozenset[int] = frozenset()) -> list[list[int]]:
    """The ``top`` best words per label, each word given only to the label it scores best for, so no
    word stands for two labels; words in ``excluded`` are skipped."""
    owner = ratios.argmax(axis=0)
    return [[int(w) for w in np.argsort(-ratios[label], kind="stable")
             if owner[w] == label and np.isfinite(ratios[label, w]) and int(w) not in excluded][:top]
            for label in range(len(ratios))]


def shortlist(association: np.ndarray, size: int, excluded: frozenset[int] = frozenset()) -> list[list[int]]:
    """The ``size`` candidates most associated with each label, each given only to the label it is most
    associated with, so no phrase stands for two labels; a label that is no candidate's first takes its
    most associated ones that no other label holds.

    Args:
        association: (labels × candidates), higher meaning the candidate points to the label.
        size: candidates kept per label.
        excluded: candidate indices not to keep.
    """
    owner = association.argmax(axis=0)
    orders = [[int(i) for i in np.argsort(-row, kind="stable") if int(i) not in excluded] for row in association]
    lists = [[i for i in order if owner[i] == label][:size] for label, order in enumerate(orders)]
    held = {i for found in lists for i in found}
    return [found or [i for i in order if i not in held][:size] for found, order in zip(lists, orders)]


def centroid_offsets(embedded: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """(labels × dims): each group's mean embedding minus the mean of the groups' means: what sets a
    label's rows apart from the others'. A phrase's dot product with it is its association."""
    centroids = np.stack([embedded[list(g)].mean(axis=0) for g in groups])
    return centroids - centroids.mean(axis=0, keepdims=True)


def folds(targets: Sequence[int], k: int) -> list[np.ndarray]:
    """``k`` folds of the labeled rows, each holding every label's rows in turn (stratified), for
    choosing without a fold and scoring on it: an accuracy that selection has not seen."""
    rank = np.zeros(len(targets), dtype=int)
    seen: dict[int, int] = {}
    for i, y in enumerate(targets):
        rank[i], seen[y] = seen.get(y, 0), seen.get(y, 0) + 1
    return [np.flatnonzero(rank % k == f) for f in range(k) if (rank % k == f).any()]


def principal_axes(embedded: np.ndarray, count: int) -> np.ndarray:
    """(count × dims): the ``count`` directions along which ``embedded`` (the pool sample) varies most.
    Ten rows a label set a direction apart mostly by what those rows happen to be about; read along the
    pool's main axes, what is left is what the task's texts differ by (bench/RESULTS.md)."""
    return np.linalg.svd(embedded - embedded.mean(axis=0), full_matrices=False)[2][:count]
