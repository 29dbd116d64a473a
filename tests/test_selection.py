"""iPET's pseudo-labeling step: how many examples, from which peers, which examples."""

from __future__ import annotations

import numpy as np
import pytest

from prompt_core import ensemble
from prompt_core.selection import (collect_candidates, draw, new_examples, per_label_counts, pick_peers,
                                    select_confident)


@pytest.mark.parametrize(("gold", "generation", "growth", "zero_shot_base", "expected"), [
    (40, 1, 5, 0, 160),    # 40·5 − 40
    (40, 2, 5, 0, 960),    # 40·25 − 40
    (40, 2, 3, 0, 320),
    (0, 1, 5, 20, 100),    # zero-shot: the base replaces the (empty) gold set
    (40, 0, 5, 0, 0),
])
def test_new_examples_grow_by_d_per_generation(gold, generation, growth, zero_shot_base, expected):
    assert new_examples(gold, generation, growth, zero_shot_base) == expected


@pytest.mark.parametrize(("total", "gold_counts", "expected"), [
    (100, [10, 10, 10, 10], [25, 25, 25, 25]),
    (100, [30, 10], [75, 25]),
    (10, [1, 1, 1], [4, 3, 3]),      # largest remainder, ties to the first
    (9, [0, 0, 0], [3, 3, 3]),       # no gold: equal shares
])
def test_per_label_counts_follow_the_gold_distribution(total, gold_counts, expected):
    counts = per_label_counts(total, gold_counts)
    assert counts == expected and sum(counts) == total


def test_pick_peers_uses_a_fraction_with_accuracy_weights():
    """The peers iPET's selection ensembles (``tasks.pseudo``: ``ensemble`` of the picked peers' logits)."""
    rng = np.random.default_rng(0)
    peers = [np.full((3, 2), float(i)) for i in range(8)]

    def combine(peer_logits, weights, fraction):
        chosen, w = pick_peers(weights, fraction, "wmean", rng)
        return ensemble([peer_logits[i] for i in chosen], w), chosen

    combined, chosen = combine(peers, [1.0] * 8, 0.25)
    assert len(chosen) == 2 and len(set(chosen)) == 2
    np.testing.assert_allclose(combined, ensemble([peers[i] for i in chosen]))
    combined, _ = combine(peers[:2], [0.0, 3.0], 1.0)
    np.testing.assert_allclose(combined, peers[1])  # the zero-weight peer does not count
    combined, _ = combine(peers[:2], [0.0, 0.0], 1.0)
    np.testing.assert_allclose(combined, 0.5)  # all weights zero: a plain mean
    with pytest.raises(ValueError, match="two models"):
        pick_peers([], 0.25, "mean", rng)


def _logits(confidences: list[float], labels: list[int]) -> np.ndarray:
    """Two-class logits with the given top-class probability for each row."""
    out = np.zeros((len(labels), 2))
    for i, (p, label) in enumerate(zip(confidences, labels)):
        out[i, label] = np.log(p / (1 - p))
    return out


LOGITS = _logits([0.99, 0.6, 0.9, 0.7, 0.95, 0.55, 0.8, 0.65], [0, 0, 0, 0, 1, 1, 1, 1])


def test_top_takes_the_most_confident_per_class():
    chosen = select_confident(LOGITS, [2, 1], np.random.default_rng(0), method="top")
    assert chosen.tolist() == [0, 2, 4]


def test_sampling_draws_exact_counts_from_the_predicted_class():
    for seed in range(20):
        chosen = select_confident(LOGITS, [3, 2], np.random.default_rng(seed))
        assert len(chosen) == 5 and len(set(chosen)) == 5
        assert sum(i < 4 for i in chosen) == 3 and sum(i >= 4 for i in chosen) == 2


def test_sampling_prefers_confident_examples():
    picks = np.zeros(8)
    for seed in range(400):
        picks[select_confident(LOGITS, [1, 0], np.random.default_rng(seed))] += 1
    assert picks[0] > picks[1]  # p=0.99 drawn more often than p=0.6


def test_filters_limit_the_candidates():
    rng = np.random.default_rng(0)
    assert select_confident(LOGITS, [4, 4], rng, min_confidence=0.85).tolist() == [0, 2, 4]
    assert select_confident(LOGITS, [4, 4], rng, n_most_likely=1).tolist() == [0, 4]
    exclude = np.zeros(8, dtype=bool)
    exclude[[0, 4]] = True
    assert select_confident(LOGITS, [1, 1], rng, method="top", exclude=exclude).tolist() == [2, 6]


def test_a_short_class_gives_what_it_has():
    chosen = select_confident(LOGITS, [10, 1], np.random.default_rng(0), method="top")
    assert chosen.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("method", ["sample", "top"])
@pytest.mark.parametrize(("n_most_likely", "min_confidence"), [(None, None), (7, None), (None, 0.4)])
def test_selection_over_chunks_equals_selection_over_the_whole(method, n_most_likely, min_confidence):
    """What the sharded pool streams through: same rows, in the same order of draws, however it is cut."""
    data = np.random.default_rng(5)
    logits = data.normal(size=(500, 3))
    logits[::50] = logits[1]  # exact ties in confidence
    exclude = data.random(500) < 0.1
    whole = select_confident(logits, [20, 10, 5], np.random.default_rng(9), method, n_most_likely, min_confidence,
                             exclude)
    cuts = [0, 1, 64, 300, 301, 500]
    chunks = [(logits[a:b], exclude[a:b]) for a, b in zip(cuts, cuts[1:])]
    found = collect_candidates(chunks, 3, min_confidence)
    streamed = draw(found, [20, 10, 5], np.random.default_rng(9), method, n_most_likely)
    assert streamed.tolist() == whole.tolist() and len(whole) > 0
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert np.allclose(found.mass, probs[~exclude].sum(0))  # the pool's class mass: every row not excluded


def test_pool_balance_follows_the_estimated_marginals_and_stops_at_the_candidates():
    """A pool that is 80 % class 0 gets pseudo-labels split like that, not like a balanced gold set; and a
    class with few confident candidates gives only those (a rare class is never filled with noise)."""
    data = np.random.default_rng(3)
    truth = np.where(data.random(1000) < 0.8, 0, 1)
    logits = np.eye(2)[truth] * 4 + data.normal(scale=0.5, size=(1000, 2))
    found = collect_candidates([(logits, None)], 2)
    counts = per_label_counts(100, found.mass)
    assert abs(counts[0] - 80) <= 3 and sum(counts) == 100
    assert per_label_counts(100, [10, 10]) == [50, 50]  # balance: gold keeps PET's split
    few = collect_candidates([(logits[:30], None)], 2, min_confidence=0.99)
    chosen = draw(few, [5, 500], np.random.default_rng(0))
    assert (np.argmax(logits[chosen], -1) == 1).sum() == len(few.rows[1]) < 500
