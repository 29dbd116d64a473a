"""Labeling a pool in shards, then combining and selecting from the shards in chunks, gives what the
single-file path gives (real Prefect tasks, tiny models)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from data.parquet import SHARD, read_logits
from flows.config import RunConfig
from prompt_core import LabelingConfig, LearnerSpec
from tasks import ensembles, pseudo
from tasks.models import label_set, untrained_model
from tiny import _texts, toy_run_config

POOL, SHARD_ROWS, CHUNK_ROWS = 300, 64, 50  # 5 shards; chunks that straddle shard boundaries


@pytest.fixture
def setup(tmp_path):
    config = RunConfig.model_validate(toy_run_config(tmp_path))
    rows = _texts(random.Random(1), POOL + 8)
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"id": [f"u{i}" for i in range(POOL)], "text": [t for t, _ in rows[:POOL]],
                             "hidden_label": [l for _, l in rows[:POOL]]}), pool)
    labeled = tmp_path / "labeled.parquet"
    pq.write_table(pa.table({"id": [f"g{i}" for i in range(8)], "text": [t for t, _ in rows[POOL:]],
                             "label": [l for _, l in rows[POOL:]]}), labeled)
    run_dir = tmp_path / "run"
    models = [untrained_model(f"zero-shot-p{p}", LearnerSpec.cloze(config.model, config.pvp(p), max_length=32),
                              str(run_dir)) for p in range(2)]
    return config, str(pool), str(labeled), str(run_dir), models


def label(models, pool, run_dir, shard_rows=None, shards=1) -> list[str]:
    labeling = LabelingConfig(batch_size=16, shard_rows=shard_rows)
    results = [label_set({f"m{i}": m for i, m in enumerate(models)}, "pool", pool, run_dir, labeling, s)
               for s in range(shards)]
    return [results[0][f"m{i}"]["path"] for i in range(len(models))]


def test_sharded_labeling_and_selection_equal_the_single_file_path(prefect_harness, setup, monkeypatch):
    config, pool, labeled, run_dir, models = setup
    whole = label(models, pool, run_dir)
    sharded = label(models, pool, run_dir, SHARD_ROWS, shards=5)
    for one, many in zip(whole, sharded):
        assert sorted(p.name for p in Path(many).iterdir()) == [SHARD.format(i, 5) for i in range(5)]
        assert pq.read_table(many, columns=["id"]) == pq.read_table(one, columns=["id"])
        np.testing.assert_allclose(read_logits(many), read_logits(one), rtol=1e-5, atol=1e-5)

    ipet = config.ipet.model_copy(update={"peer_fraction": 1.0, "selection": "top", "soft_labels": True})
    labels = list(config.labels)
    args = ("g1-p0-s1", 1, labeled, pool)
    expected = pseudo.build_train_set(*args, whole, [0.5, 1.0], labels, ipet, 1, run_dir)
    combined = ensembles.combine("pool", whole, [0.5, 1.0], pool, labels, run_dir)
    monkeypatch.setattr(pseudo, "CHUNK_ROWS", CHUNK_ROWS)
    streamed = pseudo.build_train_set(*args, sharded, [0.5, 1.0], labels, ipet, 1, run_dir)
    combined_streamed = ensembles.combine("pool", sharded, [0.5, 1.0], pool, labels, run_dir)

    assert expected["pseudo_size"] == streamed["pseudo_size"] > 0
    assert rows(streamed["path"]) == rows(expected["path"])
    np.testing.assert_allclose(read_logits(streamed["path"]), read_logits(expected["path"]), rtol=1e-5, atol=1e-5)
    assert streamed["pseudo_label_accuracy"] == expected["pseudo_label_accuracy"]
    assert rows(combined_streamed["path"]) == rows(combined["path"])
    assert combined_streamed["accuracy"] == combined["accuracy"] is not None


def test_a_few_shot_set_does_not_depend_on_the_zero_shot_base(prefect_harness, setup, tmp_path):
    """``ipet.zero_shot_per_class`` sizes a set only when there is no gold set: a few-shot run's set,
    its key and so its draw stay as they were when that default changes (it went from 10 to 50)."""
    config, pool, labeled, run_dir, models = setup
    logits, labels = label(models, pool, run_dir), list(config.labels)

    def made(gold: str, base: int) -> str:
        ipet = config.ipet.model_copy(update={"zero_shot_per_class": base})
        return pseudo.build_train_set("g1-p0-s1", 1, gold, pool, logits, [0.5, 1.0], labels, ipet, 1, run_dir)["path"]

    assert made(labeled, 10) == made(labeled, 50)
    no_gold = tmp_path / "no-gold.parquet"
    pq.write_table(pq.read_table(labeled).slice(0, 0), no_gold)
    assert made(str(no_gold), 10) != made(str(no_gold), 20)  # zero-shot: the base sizes the set


def test_a_generations_set_does_not_depend_on_how_many_generations_follow(prefect_harness, setup):
    """Generation 1's set is drawn from generation 0's labels alone: a rerun with more generations
    (``--set ipet.generations=3``, what ``ipet gc --keep last-generation`` keeps models for) reuses it,
    and so the models trained on it, instead of drawing and training them again."""
    config, pool, labeled, run_dir, models = setup
    logits, labels = label(models, pool, run_dir), list(config.labels)

    def made(generations: int) -> str:
        ipet = config.ipet.model_copy(update={"generations": generations})
        made = pseudo.build_train_set("g1-p0-s1", 1, labeled, pool, logits, [0.5, 1.0], labels, ipet, 1, run_dir)
        return made["path"]

    assert made(1) == made(2) == made(3)


def test_a_gold_text_is_never_drawn_as_a_pseudo_label_whatever_its_surrounding_whitespace(prefect_harness, setup,
                                                                                           tmp_path):
    """Selection matches gold texts as the dataset store and the answers do (``text_keys``): a pool row
    that is a gold row but for its surrounding spaces is the gold row, not a candidate."""
    config, pool, labeled, run_dir, models = setup
    logits, labels = label(models, pool, run_dir), list(config.labels)
    pool_rows = pq.read_table(pool).slice(0, POOL // 2)
    gold = tmp_path / "gold-spaced.parquet"
    pq.write_table(pa.table({"id": [f"g{i}" for i in range(pool_rows.num_rows)],
                             "text": [f"  {t}\n" for t in pool_rows["text"].to_pylist()],
                             "label": pool_rows["hidden_label"]}), gold)
    ipet = config.ipet.model_copy(update={"peer_fraction": 1.0, "selection": "top"})
    made = pseudo.build_train_set("g1-p0-s1", 1, str(gold), pool, logits, [0.5, 1.0], labels, ipet, 1, run_dir)
    made_set = pq.read_table(made["path"])
    drawn = made_set.filter(pc.equal(made_set["source"], "pseudo"))
    assert made["pseudo_size"] == drawn.num_rows > 0
    assert not set(drawn["id"].to_pylist()) & set(pool_rows["id"].to_pylist())


def test_an_incomplete_shard_directory_is_never_read(prefect_harness, setup):
    _, pool, _, run_dir, models = setup
    first_shard_only = [label_set({"m0": models[0]}, "pool", pool, run_dir, LabelingConfig(batch_size=16,
                                                                                             shard_rows=SHARD_ROWS),
                                  0)["m0"]["path"]]
    with pytest.raises(FileNotFoundError, match="incomplete shard directory"):
        read_logits(first_shard_only[0])


def test_a_killed_shard_writers_temporary_is_removed_when_the_run_dir_is_taken(prefect_harness, setup):
    """A shard is written inside its set's directory, one level below ``logits/``; what a SIGKILL
    leaves there mid-write is removed by the next run like any other temporary, and the finished
    shards stay."""
    from data.outputs import TMP_SUFFIX
    from flows.session import owned_run_dir

    _, pool, _, run_dir, models = setup
    shard_dir = Path(label_set({"m0": models[0]}, "pool", pool, run_dir,
                               LabelingConfig(batch_size=16, shard_rows=SHARD_ROWS), 0)["m0"]["path"])
    left = shard_dir / f".{SHARD.format(1, 5)}.host.4242.0123456789ab{TMP_SUFFIX}"  # as atomic_path names shard 1
    left.write_bytes(b"PAR1 half a shard")
    with owned_run_dir(run_dir):
        pass
    assert sorted(p.name for p in shard_dir.iterdir()) == [SHARD.format(0, 5)]


def rows(path: str) -> list[tuple]:
    table = pq.read_table(path)
    return list(zip(*(table[c].to_pylist() for c in table.column_names if c != "logits")))


def test_row_ranges_and_chunks_read_exactly_the_rows_asked_for(tmp_path):
    """What a shard task reads (a row range) and what selection zips (equal chunks), across row groups."""
    from data.parquet import iter_chunks, iter_rows

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(100)]}), path, row_group_size=7)
    for start, stop in [(0, 100), (0, 0), (6, 7), (7, 64), (64, 100), (99, 100)]:
        assert [int(r["id"]) for r in iter_rows(path, ["id"], 4, start, stop)] == list(range(start, stop))
    chunks = list(iter_chunks(path, ["id"], 30))
    assert [c.num_rows for c in chunks] == [30, 30, 30, 10]
    assert [int(i) for c in chunks for i in c["id"].to_pylist()] == list(range(100))
