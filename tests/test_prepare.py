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


def test_texts_and_ids_of_numbers_are_prepared_as_written_and_labels_matched(tmp_path: Path) -> None:
    """CSV columns of numbers were typed: the texts ``007`` and ``7.0`` both became ``7`` (a test row then
    "leaked" from a gold row it only resembles) and ids lost their zeros. Prepared as written; only a
    label is matched to the config's (``1.0`` is the label ``1``, ``True`` the label ``true``)."""
    (tmp_path / "gold.csv").write_text("id,text,label\n007,007,1.0\n008,1.0,2.0\n009,1e3,True\n")
    (tmp_path / "pool.csv").write_text("id,text\n01,7\n02,1\n03,1000\n04,NA\n05,true\n")
    (tmp_path / "test.csv").write_text("id,text,label\n1,7.0,1\n2,1,2\n3,1e3,true\n")
    data = DataConfig.model_validate({"root": str(tmp_path), "test": {"path": "test.csv"},
                                      "labeled": {"path": "gold.csv", "id_column": "id"},
                                      "unlabeled": {"path": "pool.csv", "id_column": "id"}})
    manifest = prepare(data, FIELDS, ("1", "2", "true"), tmp_path / "run")
    sets = {name: pq.read_table(manifest[name]).to_pylist() for name in ("labeled", "pool", "test")}
    assert sets["labeled"] == [{"id": "007", "text": "007", "label": "1"}, {"id": "008", "text": "1.0", "label": "2"},
                               {"id": "009", "text": "1e3", "label": "true"}]
    assert sorted((r["id"], r["text"]) for r in sets["pool"]) == [("01", "7"), ("03", "1000"), ("04", "NA"),
                                                                  ("05", "true")]
    assert [r["text"] for r in sets["test"]] == ["7.0", "1", "1e3"]
    # a leak is a text written the same: the test's 1 is the pool's 1 (dropped), and its 1e3 gold's 1e3 (kept),
    # never a text that is the same number (7.0 and the pool's 7, 1e3 and the pool's 1000, 1 and gold's 1.0)
    assert manifest["leaks"] == {"in_labeled": ["3"], "in_pool": ["2"], "pool_rows_dropped": 1, "other_test_sets": [],
                                 "typed_fields": []}


def test_a_run_directory_prepared_by_earlier_readers_reads_its_data_again(tmp_path: Path, monkeypatch) -> None:
    """Readers that read otherwise (CSV columns of numbers typed: ``007`` was ``7``) prepared sets that
    must not be reused; sets that come out the same keep their files, and what was trained on them."""
    import data.prepare

    config, run = DataConfig.model_validate(toy_run_config(tmp_path)["data"]), tmp_path / "run"
    monkeypatch.setattr(data.prepare, "READER", data.prepare.READER - 1)
    earlier = prepare(config, FIELDS, LABELS, run)
    monkeypatch.undo()
    now = prepare(config, FIELDS, LABELS, run)
    assert now["key"] != earlier["key"] and (run / f"data-{now['key']}" / "manifest.json").is_file()
    assert [now[n] for n in ("labeled", "pool", "test")] == [earlier[n] for n in ("labeled", "pool", "test")]


def test_pool_labels_that_are_no_labels_are_not_hidden_labels(tmp_path: Path) -> None:
    """A pool whose label column marks its rows unlabeled (``-1``, as the hub's test splits do) had those
    values as hidden labels: pseudo-label and pool accuracy were scored against ``-1`` (0.0), the pool
    labeled again only for that. Values that are no label are null; a pool with no label at all has none."""
    from data.prepare import load_sets

    (tmp_path / "gold.csv").write_text("text,label\na fine film,pos\na dull film,neg\n")
    (tmp_path / "pool.csv").write_text("text,label\n" + "".join(f"film {i},-1\n" for i in range(6)))
    config = DataConfig(labeled={"path": str(tmp_path / "gold.csv")}, unlabeled={"path": str(tmp_path / "pool.csv")})
    pool = load_sets(config, FIELDS, LABELS)[0]["pool"]
    assert pool.column_names == ["id", "text"] and pool.num_rows == 6
    (tmp_path / "pool.csv").write_text("text,label\nfilm 0,-1\nfilm 1,pos\nfilm 2,\nfilm 3,neg\n")
    pool = load_sets(config, FIELDS, LABELS)[0]["pool"]
    assert pool["hidden_label"].to_pylist() == [None, "pos", None, "neg"]
