"""Ensembling class scores, accuracy, and the package's independence from the pipeline stack."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prompt_core import accuracy, ensemble, softmax

A = np.array([[1.0, 2.0], [3.0, 4.0]])
B = np.array([[3.0, 0.0], [1.0, 2.0]])


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        (None, [[2.0, 1.0], [2.0, 3.0]]),
        ([3.0, 1.0], [[1.5, 1.5], [2.5, 3.5]]),  # (3A + B) / 4
        ([0.0, 2.0], B.tolist()),  # a zero weight drops a model
    ],
)
def test_mean_of_logits(weights: list[float] | None, expected: list[list[float]]) -> None:
    np.testing.assert_allclose(ensemble([A, B], weights), expected)


def test_mean_of_probabilities_by_hand() -> None:
    uniform, skewed = np.array([[0.0, 0.0]]), np.array([[math.log(3.0), 0.0]])  # (1/2, 1/2) and (3/4, 1/4)
    result = ensemble([uniform, skewed], over="probs")
    np.testing.assert_allclose(result, np.log([[0.625, 0.375]]), atol=1e-9)


@pytest.mark.parametrize("weights", [None, [0.2, 0.5, 0.3]])
def test_softmax_of_probability_ensemble_is_the_mean_probability(weights: list[float] | None) -> None:
    rng = np.random.default_rng(0)
    logits = [rng.normal(scale=3.0, size=(5, 4)) for _ in range(3)]
    mean_probs = np.average([softmax(l) for l in logits], axis=0, weights=weights)
    np.testing.assert_allclose(softmax(ensemble(logits, weights, over="probs")), mean_probs, atol=1e-9)
    assert not np.allclose(softmax(ensemble(logits, weights)), mean_probs)  # unlike the mean of logits


@pytest.mark.parametrize(
    "weights", [[-1.0, 2.0], [1.0], [1.0, 2.0, 3.0], [0.0, 0.0], [float("nan"), 1.0]],
    ids=["negative", "too-few", "too-many", "zero-sum", "nan"],
)
def test_bad_weights_raise(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="weight"):
        ensemble([A, B], weights)


def test_unknown_reduction_raises() -> None:
    with pytest.raises(ValueError, match="over"):
        ensemble([A, B], over="prob")


def test_nothing_to_ensemble_raises() -> None:
    with pytest.raises(ValueError):
        ensemble([])


def test_accuracy() -> None:
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.5, 0.7]])
    assert accuracy(logits, [0, 1, 1, 1]) == pytest.approx(0.75)
    assert accuracy(logits, np.array([1, 0, 1, 0])) == 0.0
    assert math.isnan(accuracy(np.empty((0, 2)), []))


def test_import_does_not_pull_in_prefect_or_mlflow() -> None:
    code = "import prompt_core, sys; assert 'prefect' not in sys.modules and 'mlflow' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
