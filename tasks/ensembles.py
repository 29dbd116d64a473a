"""Combining models as a Prefect task: their logits on a set ensembled, written with the predicted
labels, and scored against the set's labels (a test set's accuracy, a pool's pseudo-label accuracy)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from data.location import exists, local, location
from data.outputs import atomic_path, content_key
from data.parquet import CHUNK_ROWS, iter_chunks, iter_with_logits, logits_column, ref
from prompt_core import ensemble


@task(task_run_name="combine {name}", cache_policy=NO_CACHE)
def combine(name: str, logit_paths: Sequence[str], weights: Sequence[float] | None, dataset: str,
            labels: Sequence[str], run_dir: str) -> dict[str, Any]:
    """Ensemble several models' logits on ``dataset`` and score them against its labels.

    The output keeps the dataset's rows with ``logits`` and the predicted ``label``, so a
    combined pool is directly a soft-labeled training set (distillation). Rows are streamed
    ``CHUNK_ROWS`` at a time, so a pool of any size fits.
    """
    key = content_key("combine", [ref(p) for p in logit_paths], weights, ref(dataset))
    out = location(run_dir) / "predictions" / f"{name}-{key}.parquet"
    if not exists(out):
        schema = pq.read_schema(local(dataset))
        schema = schema.remove(schema.get_field_index("label")) if "label" in schema.names else schema
        schema = schema.append(pa.field("label", pa.string())).append(
            pa.field("logits", pa.list_(pa.float32(), len(labels))))
        with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
            for chunk, model_logits in iter_with_logits(dataset, None, logit_paths, CHUNK_ROWS):
                logits = ensemble(model_logits, weights).astype(np.float32)
                predicted = pa.array([labels[i] for i in logits.argmax(-1)], pa.string())
                chunk = chunk.drop_columns([c for c in ("label",) if c in chunk.column_names])
                writer.write_table(chunk.append_column("label", predicted).append_column("logits",
                                                                                          logits_column(logits)))
    return {"path": str(out), "accuracy": _accuracy(out, dataset)}


def _accuracy(predictions: str, dataset: str) -> float | None:
    """Share of predicted labels equal to the dataset's ``label`` (or ``hidden_label``); None if any is unknown."""
    names = pq.read_schema(local(dataset)).names
    truth_col = "label" if "label" in names else "hidden_label" if "hidden_label" in names else None
    if truth_col is None:
        return None
    right = total = 0
    for predicted, truth in zip(iter_chunks(predictions, ["label"], CHUNK_ROWS),
                                iter_chunks(dataset, [truth_col], CHUNK_ROWS), strict=True):
        if truth[truth_col].null_count:
            return None
        right += pc.sum(pc.equal(predicted["label"], truth[truth_col])).as_py() or 0
        total += truth.num_rows
    return right / total if total else None
