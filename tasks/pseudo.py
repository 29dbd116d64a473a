"""iPET's selection as a Prefect task: the gold set plus the peers' most confident pool examples."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from data.dataset_store import text_keys
from data.location import exists, local, location
from data.outputs import atomic_path, content_key, write_parquet
from data.parquet import CHUNK_ROWS, iter_chunks, iter_with_logits, logits_column, num_rows, ref, table_logits
from prompt_core import ensemble
from prompt_core.selection import collect_candidates, draw, new_examples, per_label_counts, pick_peers
from prompt_core.settings import IpetConfig


GOLD_LOGIT = 100.0  # a gold label as soft target: one-hot after any temperature


@task(task_run_name="select {name}", cache_policy=NO_CACHE)
def build_train_set(name: str, generation: int, labeled: str, pool: str, peer_logits: Sequence[str],
                    peer_weights: Sequence[float], labels: Sequence[str], ipet: IpetConfig, seed: int,
                    run_dir: str) -> dict[str, Any]:
    """Gold set plus confident pseudo-labeled pool examples, sized base·d^generation."""
    key = content_key("trainset", name, generation, ref(labeled), ref(pool), [ref(p) for p in peer_logits],
                      list(peer_weights), _keyed(ipet, num_rows(labeled)), seed)
    out = location(run_dir) / "sets" / f"{name}-{key}.parquet"
    if not exists(out):
        write_parquet(_train_set(generation, labeled, pool, peer_logits, peer_weights, labels, ipet,
                                 np.random.default_rng([seed, generation, int(key, 16) % 2**32])), out)
    table = pq.read_table(local(out), columns=["source", "label", "hidden_label"])
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


def gold_logits(gold_labels: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Gold labels as soft targets, one row each: one-hot × ``GOLD_LOGIT``."""
    one_hot = np.eye(len(labels), dtype=np.float32)[[labels.index(l) for l in gold_labels]]
    return one_hot.reshape(-1, len(labels)) * GOLD_LOGIT


KEYED_GENERATIONS = 2  # the default of ipet.generations, which every set's key held until it was left out


def _keyed(ipet: IpetConfig, gold_rows: int) -> dict[str, Any]:
    """``ipet`` as a set's key holds it. With a gold set, ``zero_shot_per_class`` (the base when there is
    none) changes nothing, so the key keeps the value it had when that setting came, 10: its default
    becoming 50 neither invalidates few-shot runs' sets nor redraws them (the draw is seeded from the key).
    How many generations follow changes no generation's set either, so every run keys the default's value:
    a rerun with more generations reuses the ones it has, and runs at the default keep their keys."""
    return {**ipet.model_dump(), "generations": KEYED_GENERATIONS,
            **({"zero_shot_per_class": 10} if gold_rows else {})}


def _new_examples(labeled: str, generation: int, ipet: IpetConfig, num_labels: int) -> int:
    return new_examples(num_rows(labeled), generation, ipet.growth, ipet.zero_shot_per_class * num_labels)


def _train_set(generation: int, labeled: str, pool: str, peer_logits: Sequence[str], peer_weights: Sequence[float],
               labels: Sequence[str], ipet: IpetConfig, rng: np.random.Generator) -> pa.Table:
    """Two passes over the pool and the chosen peers' logits, ``CHUNK_ROWS`` rows at a time: the first
    keeps each class's candidates only, the second fetches the rows drawn; memory does not grow with the pool."""
    gold = pq.read_table(local(labeled))
    peers, weights = pick_peers(peer_weights, ipet.peer_fraction, ipet.reduction, rng)
    fields = [c for c in gold.column_names if c not in ("id", "label")]
    gold_keys = text_keys(gold, fields).combine_chunks()

    def pool_chunks(columns: list[str]) -> Iterator[tuple[pa.Table, np.ndarray]]:
        """The pool's rows with the chosen peers' combined logits."""
        for chunk, logits in iter_with_logits(pool, columns, [peer_logits[i] for i in peers], CHUNK_ROWS):
            yield chunk, ensemble(logits, weights)

    def candidates() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # a gold row's text is never a pseudo-label: the store's and the answers' rule (text_keys)
        for chunk, logits in pool_chunks(fields):
            yield logits, pc.is_in(text_keys(chunk, fields), value_set=gold_keys).to_numpy(zero_copy_only=False)

    found = collect_candidates(candidates(), len(labels), ipet.min_confidence)
    shares = found.mass if ipet.balance == "pool" else [gold["label"].to_pylist().count(label) for label in labels]
    counts = per_label_counts(_new_examples(labeled, generation, ipet, len(labels)), shares)
    chosen = draw(found, counts, rng, ipet.selection, ipet.n_most_likely)
    schema = pq.read_schema(local(pool))
    picked_rows, picked_logits, offset = [], [], 0
    for chunk, logits in pool_chunks(schema.names):
        in_chunk = chosen[(chosen >= offset) & (chosen < offset + chunk.num_rows)] - offset
        picked_rows.append(chunk.take(in_chunk))
        picked_logits.append(logits[in_chunk])
        offset += chunk.num_rows
    picked = pa.concat_tables(picked_rows) if picked_rows else schema.empty_table()
    logits = np.concatenate(picked_logits) if picked_logits else np.empty((0, len(labels)))
    hidden = picked["hidden_label"] if "hidden_label" in picked.column_names else pa.nulls(len(chosen), pa.string())
    pseudo = {
        "id": picked["id"], **{f: picked[f] for f in fields},
        "label": pa.array([labels[i] for i in logits.argmax(-1)], pa.string()),
        "source": pa.array(["pseudo"] * len(chosen), pa.string()), "hidden_label": hidden,
    }
    gold_part = {
        "id": gold["id"], **{f: gold[f] for f in fields}, "label": gold["label"],
        "source": pa.array(["gold"] * gold.num_rows, pa.string()), "hidden_label": gold["label"],
    }
    if ipet.soft_labels:
        gold_part["logits"] = logits_column(gold_logits(gold["label"].to_pylist(), labels))
        pseudo["logits"] = logits_column(logits.reshape(-1, len(labels)))
    return pa.concat_tables([pa.table(gold_part), pa.table(pseudo)]).cast(pa.table(gold_part).schema)


@task(task_run_name="gold labels over the soft pool", cache_policy=NO_CACHE)
def with_gold_labels(soft_pool: str, labeled: str, labels: Sequence[str], run_dir: str) -> str:
    """The ensemble's soft-labeled pool, where the gold set has a row's text (a person's answer to
    ``ask:``, which stays in the pool it was asked from), with that gold label as the row's target
    instead of the ensemble's guess, so the distilled model learns the answer. The same path when no
    pool row has a gold label (a run without answers: the pool and the gold set never share a text)."""
    gold = pq.read_table(local(labeled))
    fields = [c for c in gold.column_names if c not in ("id", "label")]
    known = dict(zip(text_keys(gold, fields).to_pylist(), gold["label"].to_pylist()))
    answered = lambda chunk: [known.get(k) for k in text_keys(chunk, fields).to_pylist()]  # noqa: E731
    if not known or not any(any(answered(c)) for c in iter_chunks(soft_pool, fields, CHUNK_ROWS)):
        return soft_pool
    out = location(run_dir) / "sets" / f"final-pool-{content_key('gold-over', ref(soft_pool), ref(labeled))}.parquet"
    if not exists(out):
        with atomic_path(out) as tmp, pq.ParquetWriter(tmp, pq.read_schema(local(soft_pool))) as writer:
            for chunk in iter_chunks(soft_pool, None, CHUNK_ROWS):
                answers = answered(chunk)
                logits = table_logits(chunk).copy()
                rows = [i for i, label in enumerate(answers) if label is not None]
                logits[rows] = gold_logits([answers[i] for i in rows], labels)
                chunk = chunk.set_column(chunk.schema.get_field_index("label"), "label",
                                         pa.array([a or g for a, g in zip(answers, chunk["label"].to_pylist())]))
                writer.write_table(chunk.set_column(chunk.schema.get_field_index("logits"), "logits",
                                                    logits_column(logits)).cast(writer.schema))
    return str(out)
