"""Labeling: class logits for many rows, streamed, with as little padding as possible."""

from __future__ import annotations

from itertools import islice
from typing import Any, Iterable, Iterator, Literal, Mapping

import numpy as np
import torch

from .device import autocast, select_device
from .learners import Learner
from .settings import Precision
from .stopping import check


DEFAULT_BATCH_SIZE = 64  # "auto" on a CPU
MAX_BATCH_SIZE = 4096


def predict_logits(
    learner: Learner,
    rows: Iterable[Mapping[str, Any]],
    batch_size: int | Literal["auto"] = 64,
    device: str = "auto",
    chunk_size: int = 4096,
    precision: Precision = "auto",
) -> Iterator[np.ndarray]:
    """Yield (chunk × classes) float32 logits in input order, one array per chunk of rows.

    Rows are consumed ``chunk_size`` at a time, so memory stays flat however long the input
    is; within a chunk they are scored in order of length to cut padding. Zero-shot
    labeling is this same call on an untrained learner. A stop of the run raises
    ``stopping.Stopped`` before the next batch (``prompt_core/stopping.py``).

    Args:
        learner: the model, trained or not.
        rows: dicts holding (at least) the fields its template reads.
        batch_size: rows per forward pass; ``"auto"`` sizes it by a CUDA device's free memory
            (``DEFAULT_BATCH_SIZE`` elsewhere).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        chunk_size: rows read and yielded at a time.
        precision: ``auto``, ``bf16`` or ``fp32`` (``device.autocast``).
    """
    dev = select_device(device)
    learner.to(dev).eval()
    if batch_size == "auto":
        batch_size = auto_batch_size(learner, dev)
    rows, done = iter(rows), 0
    with learner.scoring(precision):
        while chunk := list(islice(rows, chunk_size)):
            features = learner.featurize(chunk)
            order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
            out = np.empty((len(features), len(learner.labels)), dtype=np.float32)
            # not across the yield: the caller's code is not ours
            with torch.inference_mode(), autocast(dev, precision):
                for start in range(0, len(order), batch_size):
                    check(f"labeling: stopped after {done + start} rows")
                    idx = order[start : start + batch_size]
                    batch = {k: v.to(dev) for k, v in learner.collate([features[i] for i in idx]).items()}
                    out[idx] = learner(batch).float().cpu().numpy()
            done += len(chunk)
            yield out


def predict_all(learner: Learner, rows: Iterable[Mapping[str, Any]], **kw) -> np.ndarray:
    """All logits at once, for inputs small enough to hold (test sets, training sets).

    Args:
        learner, rows: as for ``predict_logits``; ``**kw`` its other arguments.

    Returns:
        An (N × classes) float32 array, rows in input order.
    """
    chunks = list(predict_logits(learner, rows, **kw))
    return np.concatenate(chunks) if chunks else np.empty((0, len(learner.labels)), dtype=np.float32)


def auto_batch_size(learner: Learner, device: torch.device) -> int:
    """Rows per labeling batch: what half the device's free memory holds, measured now."""
    if device.type != "cuda":
        return DEFAULT_BATCH_SIZE
    free, _ = torch.cuda.mem_get_info(device)
    config = learner.model.config
    intermediate = getattr(config, "intermediate_size", 4 * config.hidden_size)
    return rows_that_fit(free, row_bytes(config.hidden_size, intermediate, config.num_attention_heads,
                                         config.vocab_size, learner.spec.max_length))


def row_bytes(hidden: int, intermediate: int, heads: int, vocab: int, length: int, bytes_per_value: int = 4) -> int:
    """Peak activation memory of one row in an encoder's forward pass without gradients.

    Layers run one at a time and free their inputs, so the peak is one layer's: a few hidden-size
    tensors per token (residual, query, key, value, attention output: 5), the feed-forward's
    intermediate, and each head's length × length attention scores and their softmax (2); plus
    one vocabulary-size row for the masked-LM head at the mask. 4 bytes per value even under bf16
    autocast (softmax and layer norm run in float32), which errs on the safe side.
    """
    return bytes_per_value * (length * (5 * hidden + intermediate + 2 * heads * length) + vocab)


def rows_that_fit(free_bytes: int, bytes_per_row: int, share: float = 0.5, most: int = MAX_BATCH_SIZE) -> int:
    """The largest power of two of rows whose activations take at most ``share`` of ``free_bytes``
    (at least 1, at most ``most``); the other half stays for the weights' workspace and fragmentation."""
    fit = int(free_bytes * share) // max(1, bytes_per_row)
    return max(1, min(most, 1 << max(0, fit.bit_length() - 1)))
