"""Labeling: class logits for many rows, streamed, with as little padding as possible."""

from __future__ import annotations

from itertools import islice
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import torch

from .device import autocast, select_device
from .learners import Learner


def predict_logits(
    learner: Learner,
    rows: Iterable[Mapping[str, Any]],
    batch_size: int = 64,
    device: str = "auto",
    chunk_size: int = 4096,
) -> Iterator[np.ndarray]:
    """Yield (chunk × classes) float32 logits in input order, one array per chunk of rows.

    Rows are consumed ``chunk_size`` at a time, so memory stays flat however long the input
    is; within a chunk they are scored in order of length to cut padding. Zero-shot
    labeling is this same call on an untrained learner.
    """
    dev = select_device(device)
    learner.to(dev).eval()
    rows = iter(rows)
    while chunk := list(islice(rows, chunk_size)):
        features = learner.featurize(chunk)
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
        out = np.empty((len(features), len(learner.labels)), dtype=np.float32)
        with torch.inference_mode(), autocast(dev):
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = {k: v.to(dev) for k, v in learner.collate([features[i] for i in idx]).items()}
                out[idx] = learner(batch).float().cpu().numpy()
        yield out


def predict_all(learner: Learner, rows: Iterable[Mapping[str, Any]], **kw) -> np.ndarray:
    """All logits at once, for inputs small enough to hold (test sets, training sets)."""
    chunks = list(predict_logits(learner, rows, **kw))
    return np.concatenate(chunks) if chunks else np.empty((0, len(learner.labels)), dtype=np.float32)
