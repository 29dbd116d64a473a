"""Prefect tasks between generations: combine peers' logits, pick confident pool examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from data.store import content_key, write_parquet
from prompt_core import ensemble
from prompt_core.selection import combine_peers, new_examples, per_label_counts, select_confident

from .io import logits_column, read_logits, ref

GOLD_LOGIT = 100.0  # a gold label as soft target: one-hot after any temperature


@task(task_run_name="combine {name}", cache_policy=NO_CACHE)
def combine(name: str, logit_paths: Sequence[str], weights: Sequence[float] | None, dataset: str,
            labels: Sequence[str], run_dir: str) -> dict[str, Any]:
    """Ensemble several models' logits on ``dataset`` and score them against its labels.

    The output keeps the dataset's rows with ``logits`` and the predicted ``label``, so a
    combined pool is directly a soft-labeled training set (distillation).
    """
    key = content_key("combine", [ref(p) for p in logit_paths], weights, ref(dataset))
    out = Path(run_dir) / "predictions" / f"{name}-{key}.parquet"
    table = pq.read_table(dataset)
    truth_col = "label" if "label" in table.column_names else "hidden_label"
    truth = table[truth_col].to_pylist() if truth_col in table.column_names else None
    if not out.exists():
        logits = ensemble([read_logits(p) for p in logit_paths], weights).astype(np.float32)
        predicted = pa.array([labels[i] for i in logits.argmax(-1)], pa.string())
        table = table.drop_columns([c for c in ("label",) if c in table.column_names])
        write_parquet(table.append_column("label", predicted).append_column("logits", logits_column(logits)), out)
    predicted = pq.read_table(out, columns=["label"])["label"].to_pylist()
    acc = None
    if truth is not None and all(t is not None for t in truth):
        acc = float(np.mean([p == t for p, t in zip(predicted, truth)]))
    return {"path": str(out), "accuracy": acc}


@task(task_run_name="select {name}", cache_policy=NO_CACHE)
def build_train_set(name: str, generation: int, labeled: str, pool: str, peer_logits: Sequence[str],
                    peer_weights: Sequence[float], labels: Sequence[str], ipet: dict, seed: int,
                    run_dir: str) -> dict[str, Any]:
    """Gold set plus confident pseudo-labeled pool examples, sized base·d^generation."""
    key = content_key("trainset", name, generation, ref(labeled), ref(pool), [ref(p) for p in peer_logits],
                      list(peer_weights), ipet, seed)
    out = Path(run_dir) / "sets" / f"{name}-{key}.parquet"
    if not out.exists():
        write_parquet(_train_set(generation, labeled, pool, peer_logits, peer_weights, labels, ipet,
                                 np.random.default_rng([seed, generation, int(key, 16) % 2**32])), out)
    table = pq.read_table(out, columns=["source", "label", "hidden_label"])
    pseudo = table.filter(pc.equal(table["source"], "pseudo"))
    wanted = _new_examples(labeled, generation, ipet, len(labels))
    if pseudo.num_rows < wanted:
        get_run_logger().warning("%s: the peers predicted too few confident examples of some class; "
                                 "%d of %d pseudo-labeled examples selected", name, pseudo.num_rows, wanted)
    known = pseudo.filter(pc.is_valid(pseudo["hidden_label"]))
    pl_acc = (float(pc.mean(pc.cast(pc.equal(known["label"], known["hidden_label"]), pa.int8())).as_py())
              if known.num_rows else None)
    return {"name": name, "path": str(out), "size": table.num_rows, "pseudo_size": pseudo.num_rows,
            "pseudo_label_accuracy": pl_acc}


def _new_examples(labeled: str, generation: int, ipet: dict, num_labels: int) -> int:
    return new_examples(pq.ParquetFile(labeled).metadata.num_rows, generation, ipet["growth"],
                        ipet["zero_shot_per_class"] * num_labels)


def _train_set(generation: int, labeled: str, pool: str, peer_logits: Sequence[str], peer_weights: Sequence[float],
               labels: Sequence[str], ipet: dict, rng: np.random.Generator) -> pa.Table:
    gold = pq.read_table(labeled)
    pool_table = pq.read_table(pool)
    gold_counts = [gold["label"].to_pylist().count(label) for label in labels]
    counts = per_label_counts(_new_examples(labeled, generation, ipet, len(labels)), gold_counts)
    logits, _ = combine_peers([read_logits(p) for p in peer_logits], peer_weights, ipet["peer_fraction"],
                              ipet["reduction"], rng)
    fields = [c for c in gold.column_names if c not in ("id", "label")]
    gold_texts = set(zip(*(gold[f].to_pylist() for f in fields))) if gold.num_rows else set()
    duplicate = np.array([t in gold_texts for t in zip(*(pool_table[f].to_pylist() for f in fields))], dtype=bool)
    chosen = select_confident(logits, counts, rng, ipet["selection"], ipet["n_most_likely"], ipet["min_confidence"],
                              exclude=duplicate)
    picked = pool_table.take(chosen)
    hidden = picked["hidden_label"] if "hidden_label" in picked.column_names else pa.nulls(len(chosen), pa.string())
    pseudo = {
        "id": picked["id"], **{f: picked[f] for f in fields},
        "label": pa.array([labels[i] for i in logits[chosen].argmax(-1)], pa.string()),
        "source": pa.array(["pseudo"] * len(chosen), pa.string()), "hidden_label": hidden,
    }
    gold_part = {
        "id": gold["id"], **{f: gold[f] for f in fields}, "label": gold["label"],
        "source": pa.array(["gold"] * gold.num_rows, pa.string()), "hidden_label": gold["label"],
    }
    if ipet["soft_labels"]:
        one_hot = np.eye(len(labels), dtype=np.float32)[[labels.index(l) for l in gold["label"].to_pylist()]]
        gold_part["logits"] = logits_column((one_hot * GOLD_LOGIT).reshape(-1, len(labels)))
        pseudo["logits"] = logits_column(logits[chosen].reshape(-1, len(labels)))
    return pa.concat_tables([pa.table(gold_part), pa.table(pseudo)]).cast(pa.table(gold_part).schema)
