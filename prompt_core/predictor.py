"""A final model as one thing to predict with: a single learner, or a weighted ensemble of learners.

A run's final model is either a distilled classifier (a learner directory) or the last
generation's ensemble. The ensemble is saved as a small directory holding ``ensemble.json``:
its members (paths relative to that directory) and their weights, combined over logits exactly
as the run combined them to score the test set. ``Predictor.load`` takes either kind of directory.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .ensembling import ensemble, softmax
from .label import predict_all
from .adapters import is_adapter
from .errors import PredictorError
from .learners import SPEC_FILE, Learner, LearnerSpec, load_learners
from .pattern import Template, empty_text, slot_text
from .settings import Precision

ENSEMBLE_FILE = "ensemble.json"
BACKBONES_FILE = "backbones.json"  # a portable model's bundled backbones: name → folder inside it
PROB_PREFIX = "prob_"  # output column of each class's probability: prob_<label>


def save_ensemble(directory: str | Path, members: Sequence[str | Path], weights: Sequence[float] | None) -> None:
    """Write ``ensemble.json`` into ``directory``; members are stored relative to it, so the
    directory and its members can move together (a run directory, a registered model).

    Args:
        directory: an existing folder, the ensemble's model directory.
        members: the member learners' directories.
        weights: one per member (their logits' weighted mean), or None for equal weights.
    """
    directory = Path(directory)
    if weights is not None and len(weights) != len(members):
        raise PredictorError(f"{len(members)} members but {len(weights)} weights")
    spec = {"members": [os.path.relpath(Path(m).resolve(), directory.resolve()) for m in members],
            "weights": None if weights is None else [float(w) for w in weights]}
    (directory / ENSEMBLE_FILE).write_text(json.dumps(spec, indent=2))


def read_ensemble(directory: str | Path) -> tuple[list[Path], list[float] | None]:
    """The member directories an ensemble directory points to, and their weights."""
    directory = Path(directory)
    spec = json.loads((directory / ENSEMBLE_FILE).read_text())
    return [(directory / m).resolve() for m in spec["members"]], spec.get("weights")


def member_dirs(directory: str | Path) -> list[Path]:
    """The learner directories of a saved final model: itself, or an ensemble's members."""
    directory = Path(directory)
    if (directory / SPEC_FILE).is_file():
        return [directory]
    if (directory / ENSEMBLE_FILE).is_file():
        return read_ensemble(directory)[0]
    raise PredictorError(f"{directory}: not a saved model (no {SPEC_FILE} or {ENSEMBLE_FILE})")


def describe(directory: str | Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A saved model's input fields and labels, read from its specs without loading weights."""
    specs = [LearnerSpec.from_json((d / SPEC_FILE).read_text()) for d in member_dirs(directory)]
    return _fields(Template(s.template) for s in specs), specs[0].labels


def adapter_backbones(directory: str | Path) -> list[str]:
    """The backbones a saved model's adapter members name, each once: what loading it needs besides itself."""
    return list(dict.fromkeys(LearnerSpec.from_json((d / SPEC_FILE).read_text()).backbone
                              for d in member_dirs(directory) if is_adapter(d)))


def bundle_backbones(directory: str | Path, fetch: Callable[[str], str],
                     copy: Callable[[str, str], object] = shutil.copy2) -> dict[str, str]:
    """Make a model directory loadable on another machine: copy into it, once each, the backbones its
    adapter members name that ``fetch`` finds as local directories, and record them in
    ``backbones.json``; a hub name stays a name. ``Predictor.load`` reads them from there.

    Args:
        directory: a saved model the caller owns (a staged copy, not a run's own directory).
        fetch: a backbone name → its local copy, or the name as is when it is none.
        copy: copies one file (``shutil.copytree``'s ``copy_function``), e.g. a hard link.

    Returns:
        Each backbone → ``"bundled"`` or ``"hub"`` (loaded by its name).
    """
    directory, bundled = Path(directory), {}
    for i, backbone in enumerate(adapter_backbones(directory)):
        source = Path(fetch(backbone))
        if source.is_dir():
            shutil.copytree(source, directory / "backbones" / str(i), copy_function=copy)
            bundled[backbone] = f"backbones/{i}"
    if bundled:
        (directory / BACKBONES_FILE).write_text(json.dumps(bundled, indent=2))
    return {b: "bundled" if b in bundled else "hub" for b in adapter_backbones(directory)}


def bundled(directory: str | Path) -> Callable[[str], str]:
    """A backbone name → its copy bundled in ``directory`` (``bundle_backbones``), else the name."""
    path = Path(directory, BACKBONES_FILE)
    folders = json.loads(path.read_text()) if path.is_file() else {}
    return lambda backbone: str(Path(directory, folders[backbone])) if backbone in folders else backbone


def _fields(templates) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f for t in templates for f in t.slots))


class Predictor:
    """Rows in, class probabilities out, in the order of ``labels``."""

    def __init__(self, learners: Sequence[Learner], weights: Sequence[float] | None = None):
        if not learners:
            raise PredictorError("a predictor needs at least one learner")
        labels = learners[0].labels
        for learner in learners[1:]:
            if learner.labels != labels:
                raise PredictorError(f"ensemble members disagree on labels: {list(labels)} vs {list(learner.labels)}")
        self.learners, self.weights, self.labels = list(learners), weights, tuple(labels)
        # one prediction at a time: adapter members of one backbone switch its active adapter in turn, and
        # a similarity learner caches its label embeddings, so two threads at once (``mlflow models serve``
        # runs each request in a thread of its own on one loaded model) read with each other's adapters
        self._busy = threading.Lock()

    @classmethod
    def load(cls, directory: str | Path, fetch: Callable[[str], str] = str) -> "Predictor":
        """A saved final model: a learner or an ensemble directory; adapter members of one backbone
        share it (``load_learners``), read from the directory's bundle when it has one, else as
        ``fetch`` (``load_learners``' argument) finds it."""
        directory = Path(directory)
        weights = read_ensemble(directory)[1] if (directory / ENSEMBLE_FILE).is_file() else None
        members = member_dirs(directory)
        missing = [m for m in members if not (m / SPEC_FILE).is_file()]
        if missing:  # an ensemble directory copied without the members it points to
            raise PredictorError(f"{directory}: ensemble member {missing[0]} is missing (its members are "
                                 "the model directories beside it; copy or move them with it)")
        inside = bundled(directory)
        return cls(load_learners(members, lambda backbone: fetch(inside(backbone))), weights)

    @property
    def fields(self) -> tuple[str, ...]:
        """The input fields any member reads, in order of first use."""
        return _fields(learner.template for learner in self.learners)

    def logits(self, rows: Sequence[Mapping[str, Any]], batch_size: int = 64, device: str = "auto",
               precision: Precision = "auto") -> np.ndarray:
        """(rows × classes) logits of ``rows``: the one learner's, or the members' weighted ensemble;
        ``batch_size`` rows at a time on ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``), in
        ``precision`` (``auto``: bf16 on CUDA and on CPUs with AMX or AVX-512 BF16; ``fp32`` gives the same
        numbers on every CPU)."""
        with self._busy:
            scores = [predict_all(learner, rows, batch_size=batch_size, device=device, precision=precision)
                      for learner in self.learners]
        return scores[0] if len(scores) == 1 else ensemble(scores, self.weights).astype(np.float32)

    def predict_proba(self, rows: Sequence[Mapping[str, Any]], batch_size: int = 64, device: str = "auto",
                      precision: Precision = "auto") -> np.ndarray:
        """(rows × classes) probabilities of ``rows``; each row sums to 1. ``batch_size``, ``device``
        and ``precision`` as for ``logits``."""
        return softmax(self.logits(rows, batch_size, device, precision).astype(np.float64))

    def predict(self, rows: Sequence[Mapping[str, Any]], batch_size: int = 64, device: str = "auto",
                precision: Precision = "auto") -> Prediction:
        """Labels and probabilities per row. A row with no text in any input field gets no label,
        NaN probabilities and an error (training data with such rows is rejected, so the model
        never learned what they mean); a field missing from some rows but not all reads as "".
        ``batch_size``, ``device`` and ``precision`` as for ``logits``."""
        fields = self.fields
        errors = [None if any(slot_text(r.get(f)).strip() for f in fields)
                  else empty_text(fields) for r in rows]
        kept = [i for i, e in enumerate(errors) if e is None]
        probs = np.full((len(rows), len(self.labels)), np.nan)
        if kept:
            good = [{f: slot_text(rows[i].get(f)) for f in fields} for i in kept]
            probs[kept] = self.predict_proba(good, batch_size, device, precision)
        labels = [None if e else self.labels[int(p.argmax())] for p, e in zip(probs, errors)]
        return Prediction(labels, probs, errors)


@dataclass
class Prediction:
    """What ``Predictor.predict`` returns for its rows: each row's label (None where it has an
    error), probabilities and error."""

    labels: list[str | None]
    probabilities: np.ndarray  # rows × classes; NaN where the row has an error
    errors: list[str | None]
