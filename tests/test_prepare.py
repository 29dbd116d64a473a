"""Prepared sets are named by their content: a data change that leaves a set as it was leaves its
path as it was, so the models and logits keyed by that path are reused."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data.prepare import DataConfig, prepare, write_set
from data.outputs import TMP_SUFFIX, file_digest
from tiny import toy_run_config

FIELDS, LABELS = ("text",), ("neg", "pos")


def test_a_pool_only_change_keeps_the_gold_and_test_paths(tmp_path: Path) -> None:
    data, run = toy_run_config(tmp_path)["data"], tmp_path / "run"
    first = prepare(DataConfig.model_validate(data), FIELDS, LABELS, run)
    second = prepare(DataConfig.model_validate({**data, "pool_size": 150}), FIELDS, LABELS, run)
    assert second["key"] != first["key"] and (first["rows"]["pool"], second["rows"]["pool"]) == (200, 150)
    assert (second["labeled"], second["test"]) == (first["labeled"], first["test"])
    assert second["pool"] != first["pool"]
    written = {first["labeled"], first["pool"], first["test"], second["pool"]}
    assert sorted((run / "data").iterdir()) == sorted(map(Path, written))  # nothing else there, no copies
    for manifest in (first, second):  # a set's name is the hash of its bytes
        for name in ("labeled", "pool", "test"):
            path = Path(manifest[name])
            assert path.parent == run / "data" and path.name == f"{name}-{file_digest(path)[:16]}.parquet"
        assert (run / f"data-{manifest['key']}" / "manifest.json").is_file()
    assert not list(run.rglob(f".*{TMP_SUFFIX}"))


def test_a_set_is_named_by_its_rows_not_by_how_they_are_chunked(tmp_path: Path) -> None:
    table = pa.table({"id": [str(i) for i in range(20000)], "text": [f"text {i} " * (i % 17) for i in range(20000)]})
    chunked = pa.concat_tables([table.slice(0, 777), table.slice(777, 9000), table.slice(9777)])
    assert chunked["text"].num_chunks == 3
    path = write_set(table, tmp_path, "pool")
    assert write_set(chunked, tmp_path, "pool") == path and pq.read_table(path).equals(table)
    assert write_set(table.slice(1), tmp_path, "pool") != path


def test_zero_labeled_per_class_draws_an_empty_gold_set() -> None:
    """k=0 (zero-shot iPET on a `train` source): no gold rows, every row in the pool."""
    from data.splits import draw_per_class

    table = pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"], "label": ["0", "1", "0"]})
    labeled, pool = draw_per_class(table, 0, ["0", "1"], seed=0, source="toy")
    assert labeled.num_rows == 0 and labeled.schema == table.schema
    assert pool.num_rows == 3


def test_a_copied_run_directory_reads_its_own_sets_after_the_original_moves(tmp_path: Path) -> None:
    """`cp -r run copy; mv run elsewhere`: preparing in the copy reuses its manifest and names the copy's
    sets (an absolute path recorded in the manifest named the original's: gone once it moved)."""
    import json
    import shutil

    data = DataConfig.model_validate(toy_run_config(tmp_path)["data"])
    first = prepare(data, FIELDS, LABELS, tmp_path / "run")
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    (tmp_path / "run").rename(tmp_path / "moved")
    again = prepare(data, FIELDS, LABELS, tmp_path / "copy")
    assert again["key"] == first["key"]
    for name in ("labeled", "pool", "test"):
        assert Path(again[name]) == tmp_path / "copy" / "data" / Path(first[name]).name
        assert pq.read_table(again[name]).num_rows == first["rows"][name]
    manifest = tmp_path / "copy" / f"data-{first['key']}" / "manifest.json"
    recorded = json.loads(manifest.read_text())
    assert recorded["pool"] == f"data/{Path(first['pool']).name}"  # relative: the directory can move again
    # a manifest of an earlier version, with absolute paths (of the original), reads as the copy's too
    manifest.write_text(json.dumps({**recorded, **{n: str(tmp_path / "moved" / "data" / Path(first[n]).name)
                                                   for n in ("labeled", "pool", "test")}}))
    (tmp_path / "moved").rename(tmp_path / "gone")
    assert prepare(data, FIELDS, LABELS, tmp_path / "copy") == again
