"""Ensembling class scores, accuracy, and the package's independence from the pipeline stack."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prompt_core import accuracy, ensemble

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


@pytest.mark.parametrize(
    "weights", [[-1.0, 2.0], [1.0], [1.0, 2.0, 3.0], [0.0, 0.0], [float("nan"), 1.0]],
    ids=["negative", "too-few", "too-many", "zero-sum", "nan"],
)
def test_bad_weights_raise(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="weight"):
        ensemble([A, B], weights)


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
