"""Ingesting new data: versions and manifests, duplicates, bad files, consistent reads, concurrent
ingests, prepared-data keys, and the ``ipet.data.arrived`` event on a real Prefect server."""

from __future__ import annotations

import contextlib
import csv
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import data.prepare
from data.ingest import Schema, ingest_file
from data.prepare import DataConfig, load_sets, pin_versions, prepare
from data.errors import DataError
from data.outputs import content_key, file_digest
from data.dataset_store import DatasetStore, Version
from flows.checks import check_run
from flows.cli import main
from flows.config import RunConfig
from flows.ingest import ingest  # imports Prefect here: its console log handler must not bind to a test's capsys
from flows.ipet import ipet
from tiny import toy_run_config, toy_store

FIELDS = ("title", "body")
LABELS = ("neg", "pos")


def write(path: Path, rows: list[tuple], header: tuple = ("title", "body", "label")) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def schema(tmp_path: Path) -> Schema:
    test = write(tmp_path / "test.csv", [("held", "out", "pos")])
    return Schema(FIELDS, LABELS, {"path": str(test)})


@pytest.fixture
def config_file(tmp_path: Path, schema: Schema) -> Path:
    """A run config whose patterns read title and body, with the test set above."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "model": "unused", "verbalizer": {"neg": "bad", "pos": "great"},
        "pvps": [{"pattern": "{title} {body} it was {mask} ."}],
        "data": {"root": str(tmp_path), "unlabeled": {"store": "stores", "dataset": "news"},
                 "test": {"path": "test.csv"}},
    }))
    return path


def rows(n: int, prefix: str, label: str = "pos") -> list[tuple]:
    return [(f"{prefix} {i}", "text", label) for i in range(n)]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under the dataset directory with its bytes (the lock file aside)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_each_ingest_is_a_version_with_a_manifest(tmp_path: Path, schema: Schema) -> None:
    store = tmp_path / "stores"
    first = write(tmp_path / "a.csv", rows(3, "a"))
    one = ingest_file(first, "news", store, schema=schema)
    two = ingest_file(write(tmp_path / "g.csv", rows(2, "g", "neg")), "news", store, labeled=True)
    assert (one["version"], two["version"], one["added"], two["added"]) == (1, 2, 3, 2)

    dataset = DatasetStore(store, "news")
    assert dataset.current() == 2
    manifest = dataset.version().manifest
    assert manifest["parent"] == 1 and manifest["rows"] == {"unlabeled": 3, "labeled": 2}
    assert manifest["schema"] == {"fields": list(FIELDS), "labels": list(LABELS), "test": schema.test,
                                  "test_key": content_key(["held\x1fout"])}  # the test texts it kept out
    # version 2 shares version 1's segment instead of copying it, and adds one of its own
    assert manifest["segments"]["unlabeled"] == dataset.version(1).manifest["segments"]["unlabeled"]
    for segment in manifest["segments"]["unlabeled"] + manifest["segments"]["labeled"]:
        assert file_digest(dataset.directory / segment["path"]) == segment["sha256"]
    assert dataset.version(1).manifest["ingest"]["source"] == {
        "path": str(first.resolve()), "sha256": file_digest(first), "rows": 3}
    assert dataset.version().read("labeled").to_pylist() == [
        {"id": "2:1", "title": "g 0", "body": "text", "label": "neg"},
        {"id": "2:2", "title": "g 1", "body": "text", "label": "neg"}]
    assert dataset.version(1).read("labeled").num_rows == 0  # old versions stay as they were


def test_duplicates_are_dropped_and_counted_by_origin(tmp_path: Path, schema: Schema) -> None:
    store = tmp_path / "stores"
    ingest_file(write(tmp_path / "u.csv", [("pool", "text", "pos")]), "news", store, schema=schema)
    ingest_file(write(tmp_path / "l.csv", [("gold", "text", "neg")]), "news", store, labeled=True)
    batch = write(tmp_path / "batch.csv", [
        ("new", "one", "pos"),
        ("  new", "one  ", "neg"),   # the same texts up to surrounding whitespace: in-file duplicate
        ("new", "two", "pos"),       # one field differs: not a duplicate
        ("held", " out", "pos"),     # the test set
        ("gold", "text", "pos"),     # the labeled set
        ("pool", "text", "pos"),     # the pool
    ])
    result = ingest_file(batch, "news", store)
    assert result["added"] == 2 and result["duplicates"] == 4
    assert result["duplicates_by_origin"] == {"file": 1, "test": 1, "labeled": 1, "unlabeled": 1}
    assert DatasetStore(store, "news").version().manifest["ingest"]["duplicates"] == result["duplicates_by_origin"]
    titles = DatasetStore(store, "news").version().read("unlabeled")["body"].to_pylist()
    assert titles == ["text", "one", "two"]


def test_texts_that_are_the_same_number_are_not_duplicates(tmp_path: Path, schema: Schema) -> None:
    """A CSV column of numbers was typed: ``007`` and ``7`` were one text, so the second file's rows were
    dropped as duplicates of the first's, and the store held ``7`` and ``1`` for what was written."""
    store = tmp_path / "stores"
    first = ingest_file(write(tmp_path / "a.csv", [("007", "1.0", "pos"), ("1e3", "true", "pos")]), "news", store,
                        schema=schema)
    second = ingest_file(write(tmp_path / "b.csv", [("7", "1", "pos"), ("1000", "True", "pos"), ("007", "1.0", "neg")]),
                         "news", store)
    assert (first["added"], second["added"], second["duplicates_by_origin"]["unlabeled"]) == (2, 2, 1)
    pool = DatasetStore(store, "news").version().read("unlabeled")
    assert list(zip(pool["title"].to_pylist(), pool["body"].to_pylist())) == [
        ("007", "1.0"), ("1e3", "true"), ("7", "1"), ("1000", "True")]


def test_labels_are_stored_as_the_schema_writes_them(tmp_path: Path) -> None:
    """A labeled file's ``1.0`` is the label ``1`` (its texts as written): stored as ``1``, so a run's sets
    and the verbalizer agree; a label that is no number of the schema's is refused, naming it."""
    schema = Schema(FIELDS, ("1", "2"), None)
    result = ingest_file(write(tmp_path / "l.csv", [("a", "007", "1.0"), ("b", "1e3", "2")]), "news",
                         tmp_path / "stores", labeled=True, schema=schema)
    gold = DatasetStore(tmp_path / "stores", "news").version().read("labeled")
    assert result["added"] == 2 and gold.select(["body", "label"]).to_pylist() == [
        {"body": "007", "label": "1"}, {"body": "1e3", "label": "2"}]
    with pytest.raises(DataError, match=r"l3.csv: label\(s\) \['1.5'\] not in the verbalizer \(labels: \['1', "
                                        r"'2'\]\) at row id\(s\) \['1'\]$"):
        ingest_file(write(tmp_path / "l3.csv", [("c", "x", "1.5")]), "news", tmp_path / "stores", labeled=True)


def test_labeling_a_pool_text_moves_it_to_the_gold_set(tmp_path: Path, schema: Schema) -> None:
    store = tmp_path / "stores"
    ingest_file(write(tmp_path / "u.csv", rows(3, "u")), "news", store, schema=schema)
    result = ingest_file(write(tmp_path / "l.csv", [("u 1", "text", "neg")]), "news", store, labeled=True)
    version = DatasetStore(store, "news").version()
    assert result["added"] == 1 and version.manifest["ingest"]["labels_for_pool_texts"] == 1
    assert version.read("labeled")["title"].to_pylist() == ["u 1"]
    assert version.read("unlabeled")["title"].to_pylist() == ["u 0", "u 2"]


def test_all_duplicates_write_no_version_and_send_no_event(tmp_path: Path, config_file: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "stores"
    batch = write(tmp_path / "a.csv", rows(2, "a"))
    assert main(["ingest", str(batch), "--dataset", "news", "--store", str(store), "--config", str(config_file)]) == 0
    before = snapshot(store / "news")
    capsys.readouterr()
    assert main(["ingest", str(batch), "--dataset", "news", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "news: nothing new in" in out and "2 duplicate(s) dropped (2 unlabeled); version 1 stays current" in out
    assert "event" not in out
    assert snapshot(store / "news") == before


BAD_FILES = {
    "missing": (None, ["nope.csv: file not found"]),
    "wrong-columns": ("title,text\nhello,world\n", ["bad.csv: missing column(s) ['body']"]),
    "empty-text": ("title,body\na,b\n  ,  \n", ["bad.csv: empty text in every input field", "row id(s) ['2']"]),
    "non-utf8": ("title,body\ncaf\xe9,b\n".encode("latin-1"), ["bad.csv: line 2: not UTF-8 text"]),
    "gzip": (b"\x1f\x8b\x08\x00binary", ["bad.csv: not csv text but a gzip-compressed file"]),
    "ragged": ("title,body\na,b\na,b,c\n", ["bad.csv: 1 malformed row(s)", "line 3 has 3 columns"]),
    "unknown-label": ("title,body,label\na,b,pos\nc,d,meh\n", ["bad.csv: label(s) ['meh'] not in the verbalizer",
                                                               "['2']"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_changes_nothing_and_names_the_problem(tmp_path: Path, schema: Schema, case: str,
                                                        capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "stores"
    ingest_file(write(tmp_path / "good.csv", rows(2, "g")), "news", store, schema=schema)
    before = snapshot(store / "news")
    content, expected = BAD_FILES[case]
    bad = tmp_path / ("nope.csv" if content is None else "bad.csv")
    if content is not None:
        bad.write_bytes(content.encode() if isinstance(content, str) else content)
    labeled = ["--labeled"] if case == "unknown-label" else []
    assert main(["ingest", str(bad), "--dataset", "news", "--store", str(store), *labeled]) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, err
    assert "Traceback" not in err
    assert snapshot(store / "news") == before  # no new version, no segment, no temporary file left behind


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", ".hidden", ""])
def test_dataset_names_cannot_leave_the_store(tmp_path: Path, config_file: Path, name: str,
                                              capsys: pytest.CaptureFixture) -> None:
    batch = write(tmp_path / "a.csv", rows(1, "a"))
    store = tmp_path / "inner" / "stores"
    assert main(["ingest", str(batch), "--dataset", name, "--store", str(store), "--config", str(config_file)]) == 2
    assert f"dataset name {name!r}" in capsys.readouterr().err
    assert not (tmp_path / "inner").exists() and not Path("/abs").exists() and not (tmp_path / "x").exists()


def test_first_ingest_needs_a_config_and_later_ones_must_agree(tmp_path: Path, config_file: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    batch, store = write(tmp_path / "a.csv", rows(1, "a")), str(tmp_path / "stores")
    assert main(["ingest", str(batch), "--dataset", "news", "--store", store]) == 2
    assert "its first ingest needs --config" in capsys.readouterr().err
    assert main(["ingest", str(batch), "--dataset", "news", "--store", store, "--config", str(config_file)]) == 0
    other = yaml.safe_load(config_file.read_text())
    other["pvps"] = [{"pattern": "{title} it was {mask} ."}]
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    batch2 = write(tmp_path / "b.csv", rows(1, "b"))
    assert main(["ingest", str(batch2), "--dataset", "news", "--store", store, "--config",
                 str(tmp_path / "other.yaml")]) == 2
    assert "differ from dataset 'news'" in capsys.readouterr().err
    assert DatasetStore(store, "news").current() == 1


def test_a_test_set_with_other_texts_is_refused_naming_it(tmp_path: Path, config_file: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """A store keeps its test set's texts out for good. A later --config naming another test set, or the
    test file edited, would silently change what is kept out (and let rows already stored overlap the new
    test set): refused, naming data.test or the file; the same texts in another file are the same test set."""
    store = str(tmp_path / "stores")
    ingest = ["--dataset", "news", "--store", store]
    assert main(["ingest", str(write(tmp_path / "a.csv", rows(2, "a"))), *ingest, "--config", str(config_file)]) == 0
    raw = yaml.safe_load(config_file.read_text())
    for name, texts in (("other", rows(1, "a")), ("moved", [("held", "out", "pos")])):
        write(tmp_path / f"{name}.csv", texts)
        raw["data"]["test"] = {"path": f"{name}.csv"}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    batch = str(write(tmp_path / "b.csv", rows(1, "b")))
    capsys.readouterr()
    assert main(["ingest", batch, *ingest, "--config", str(tmp_path / "other.yaml")]) == 2
    assert capsys.readouterr().err == (f"--config: data.test ({tmp_path / 'other.csv'}) is not the test set of dataset "
                                       f"'news' ({tmp_path / 'test.csv'}), whose texts its versions keep out (rows "
                                       "already in the store cannot be taken back); point data.test at that test "
                                       "set, or ingest into a new dataset\n")
    assert DatasetStore(store, "news").current() == 1

    assert main(["ingest", batch, *ingest, "--config", str(tmp_path / "moved.yaml")]) == 0
    assert DatasetStore(store, "news").version().manifest["schema"]["test"] == {"path": str(tmp_path / "moved.csv")}
    write(tmp_path / "moved.csv", [("held", "out", "pos"), ("c 0", "text", "pos")])  # edited: c 0 would be dropped
    capsys.readouterr()
    assert main(["ingest", str(write(tmp_path / "c.csv", rows(1, "c"))), *ingest]) == 2
    assert capsys.readouterr().err.startswith(f"dataset 'news': its test set {tmp_path / 'moved.csv'} no longer "
                                              "holds the texts that version 2 and those before it kept out")
    assert DatasetStore(store, "news").current() == 2


def ingested_before_test_key(store: Path, file: Path, schema: Schema) -> None:
    """``file`` ingested into dataset ``news`` as a version of an ipet before ``schema.test_key`` was recorded."""
    ingest_file(file, "news", store, schema=schema)
    manifest = DatasetStore(store, "news").version().path
    older = json.loads(manifest.read_text())
    del older["schema"]["test_key"]
    manifest.write_text(json.dumps(older))


def test_a_version_without_its_test_texts_key_is_compared_by_test_source(tmp_path: Path, schema: Schema) -> None:
    """A store written before versions recorded their test texts' key: its test source is what there is."""
    store = tmp_path / "stores"
    ingested_before_test_key(store, write(tmp_path / "a.csv", rows(1, "a")), schema)
    moved = Schema(FIELDS, LABELS, {"path": str(write(tmp_path / "moved.csv", [("held", "out", "pos")]))})
    with pytest.raises(DataError, match=r"--config: data.test \(.*moved.csv\) is not the test set"):
        ingest_file(write(tmp_path / "b.csv", rows(1, "b")), "news", store, schema=moved)
    assert ingest_file(tmp_path / "b.csv", "news", store, schema=schema)["version"] == 2
    assert DatasetStore(store, "news").version().manifest["schema"]["test_key"] == content_key(["held\x1fout"])


def test_a_version_without_its_test_texts_key_refuses_a_test_set_that_now_holds_its_rows(tmp_path: Path,
                                                                                         schema: Schema) -> None:
    """Without ``test_key`` a change of the test file cannot be told, but for the one that harms: a text of the
    test set now that is a row of the store (its ingest would have dropped it). That is refused, changing
    nothing; the file restored, the ingest goes on and records the key."""
    store = tmp_path / "stores"
    ingested_before_test_key(store, write(tmp_path / "a.csv", rows(2, "a")), schema)
    test = Path(schema.test["path"])
    kept = test.read_text()
    write(test, [("held", "out", "pos"), ("a 1", "text", "neg")])
    before = snapshot(store / "news")
    with pytest.raises(DataError, match=rf"^dataset 'news': its test set {test} holds 1 text\(s\) that are rows of the "
                                        r"store, which version 1 and those before it kept their test set's texts out "
                                        r"of: it changed since .*; restore it, or ingest into a new dataset"):
        ingest_file(write(tmp_path / "b.csv", rows(1, "b")), "news", store, schema=schema)
    assert snapshot(store / "news") == before
    test.write_text(kept)
    assert ingest_file(tmp_path / "b.csv", "news", store)["version"] == 2


def test_read_options_select_rows_of_a_headerless_file(tmp_path: Path, config_file: Path) -> None:
    raw = tmp_path / "raw.csv"
    raw.write_text("".join(f'"pos","t{i}","b"\n' for i in range(10)))
    assert main(["ingest", str(raw), "--dataset", "news", "--store", str(tmp_path / "stores"), "--config",
                 str(config_file), "--read", "header=false", "--read", "columns=[label,title,body]",
                 "--read", "rows=[2,5]"]) == 0
    table = DatasetStore(tmp_path / "stores", "news").version().read("unlabeled")
    assert table["id"].to_pylist() == ["1:3", "1:4", "1:5"] and table["title"].to_pylist() == ["t2", "t3", "t4"]


def test_a_reader_keeps_its_version_while_an_ingest_commits(tmp_path: Path, schema: Schema) -> None:
    store = tmp_path / "stores"
    ingest_file(write(tmp_path / "a.csv", rows(3, "a")), "news", store, schema=schema)
    config = DataConfig(root=str(tmp_path), unlabeled={"store": "stores", "dataset": "news"})
    pinned = pin_versions(config)        # a run resolves the version once…
    resolved = DatasetStore(store, "news").version()
    ingest_file(write(tmp_path / "b.csv", rows(2, "b")), "news", store)  # …another ingest commits…
    assert resolved.read("unlabeled").num_rows == 3  # …and what it resolved is still exactly version 1
    assert load_sets(pinned, FIELDS, LABELS)[0]["pool"].num_rows == 3
    assert load_sets(config, FIELDS, LABELS)[0]["pool"].num_rows == 5  # a new run sees version 2


def test_a_run_resolves_its_store_once(prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real run whose gold set and pool come from one store: pinned once, the version read once; the
    data key and both reads use what the pin resolved."""
    config = toy_run_config(tmp_path, steps=4, generations=0)
    store = toy_store(tmp_path)
    config["data"] = {"root": str(tmp_path), "labeled": store, "unlabeled": store, "test": {"path": "test.csv"}}
    config["final"] = {"mode": "ensemble"}
    calls: Counter[str] = Counter()

    def counted(name: str, real):
        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(data.prepare, "pin_versions", counted("pin_versions", data.prepare.pin_versions))
    monkeypatch.setattr(DatasetStore, "version", counted("DatasetStore.version", DatasetStore.version))
    results = ipet(config=RunConfig.model_validate(config), run_dir=str(tmp_path / "run"))
    assert [s["stage"] for s in results["stages"]] == ["zero-shot", "pet", "final"]
    assert calls == {"pin_versions": 1, "DatasetStore.version": 1}


def test_a_run_trains_on_the_store_version_it_checked(prefect_harness, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``ipet run`` checks the data, then runs the flow: an ingest committing in between must not give the
    run other data than was checked. The check resolves the store once and hands the run that version."""
    config = toy_run_config(tmp_path, steps=4, generations=0)
    store = toy_store(tmp_path)
    config["data"] = {"root": str(tmp_path), "labeled": store, "unlabeled": store, "test": {"path": "test.csv"}}
    config["final"] = {"mode": "ensemble"}
    calls: Counter[str] = Counter()
    real = DatasetStore.version
    monkeypatch.setattr(DatasetStore, "version", lambda *a, **kw: calls.update(["version"]) or real(*a, **kw))
    checked = check_run(RunConfig.model_validate(config))
    assert not checked.problems and checked.rows["pool"] == 100 and calls == {"version": 1}
    assert checked.config.data.unlabeled.version == checked.config.data.labeled.version == 2
    (tmp_path / "more.csv").write_text("text,label\n" + "".join(f"new text {i},pos\n" for i in range(30)))
    ingest_file(tmp_path / "more.csv", "toy", tmp_path / "stores")  # commits version 3 meanwhile
    ipet(config=checked.config, run_dir=str(tmp_path / "run"))
    manifest = next((tmp_path / "run").glob("data-*/manifest.json"))
    assert yaml.safe_load(manifest.read_text())["rows"]["pool"] == 100  # version 2's pool, not version 3's 130


def test_concurrent_ingests_each_land_as_a_version(tmp_path: Path, schema: Schema) -> None:
    store = tmp_path / "stores"
    ingest_file(write(tmp_path / "seed.csv", rows(1, "seed")), "news", store, schema=schema)
    files = [write(tmp_path / f"f{i}.csv", rows(50, f"f{i}")) for i in range(4)]
    start, results, errors = threading.Barrier(len(files)), [], []

    def run(path: Path) -> None:
        start.wait()
        try:
            results.append(ingest_file(path, "news", store))
        except Exception as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(f,)) for f in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(r["version"] for r in results) == [2, 3, 4, 5]
    final = DatasetStore(store, "news").version()
    assert final.number == 5 and final.manifest["rows"]["unlabeled"] == 201
    assert len(final.manifest["segments"]["unlabeled"]) == 5 and final.read("unlabeled").num_rows == 201


def test_prepared_data_follows_the_version(tmp_path: Path, schema: Schema) -> None:
    store = tmp_path / "stores"
    ingest_file(write(tmp_path / "a.csv", rows(6, "a")), "news", store, schema=schema)
    ingest_file(write(tmp_path / "g.csv", rows(1, "g") + rows(1, "h", "neg")), "news", store, labeled=True)
    config = DataConfig(root=str(tmp_path), unlabeled={"store": "stores", "dataset": "news"},
                        labeled={"store": "stores", "dataset": "news"}, test={"path": "test.csv"})
    first = prepare(config, FIELDS, LABELS, tmp_path / "run")
    assert prepare(config, FIELDS, LABELS, tmp_path / "run")["key"] == first["key"]  # same version: reused
    assert first["versions"]["labeled"] == {"store": "stores", "dataset": "news", "kind": "labeled", "version": 2}
    assert first["rows"] == {"labeled": 2, "pool": 6, "test": 1}

    ingest_file(write(tmp_path / "b.csv", rows(3, "b")), "news", store)
    second = prepare(config, FIELDS, LABELS, tmp_path / "run")
    assert second["key"] != first["key"] and second["rows"]["pool"] == 9
    # only the pool changed: the gold and test sets keep their files, so what was computed from them is reused
    assert (second["labeled"], second["test"]) == (first["labeled"], first["test"]) and second["pool"] != first["pool"]
    assert second["versions"]["unlabeled"]["version"] == 3
    pinned = config.model_copy(update={"unlabeled": config.unlabeled.model_copy(update={"version": 2}),
                                       "labeled": config.labeled.model_copy(update={"version": 2})})
    assert prepare(pinned, FIELDS, LABELS, tmp_path / "run")["key"] == first["key"]
    assert pq.read_table(second["pool"]).num_rows == 9


def test_a_run_whose_test_set_is_not_its_stores_is_told_once_per_store_version(tmp_path: Path,
                                                                              schema: Schema) -> None:
    """The store kept its own test set's texts out of its rows, not those of the run's ``data.test``: its rows
    may be the run's test rows. One line naming the store, both test sets and what it means, printed with the
    leaks (``ipet validate``, ``ipet run``, the flow: from the prepared data's manifest); the same texts in
    another file are the same test set; a store that kept no test set out is named as such."""
    from data.leaks import Leaks

    store = tmp_path / "stores"
    ingest_file(write(tmp_path / "a.csv", rows(3, "a")), "news", store, schema=schema)
    ingest_file(write(tmp_path / "g.csv", rows(1, "g") + rows(1, "h", "neg")), "news", store, labeled=True)
    ingest_file(write(tmp_path / "b.csv", rows(3, "b")), "bare", store, schema=Schema(FIELDS, LABELS))
    write(tmp_path / "moved.csv", [("held", "out", "pos")])
    write(tmp_path / "other.csv", [("a 0", "text", "pos"), ("new", "text", "neg")])  # a 0 is a pool row

    def warned(test: str, pool: str = "news") -> list[str]:
        config = DataConfig(root=str(tmp_path), unlabeled={"store": "stores", "dataset": pool},
                            labeled={"store": "stores", "dataset": "news"}, test={"path": test})
        lines = load_sets(config, FIELDS, LABELS)[1].lines(test)
        assert Leaks.of(prepare(config, FIELDS, LABELS, tmp_path / "run")["leaks"]).lines(test) == lines
        return lines

    assert warned("test.csv") == warned("moved.csv") == []
    meaning = ("out of its rows, not those of this run's test set other.csv: it never checked its rows against this "
               "one; the run drops pool rows whose text is in its test set, and reports labeled ones")
    assert warned("other.csv") == [  # labeled and pool read version 2 of one store: one line
        f"dataset store stores/news (version 2) kept the texts of its own test set ({tmp_path / 'test.csv'}) {meaning}",
        "other.csv: 1 test row(s) also in the unlabeled pool (leak), row id(s) ['1']; their 1 pool row(s) were dropped"]
    assert warned("other.csv", pool="bare")[:2] == [
        f"dataset store stores/news (version 2) kept the texts of its own test set ({tmp_path / 'test.csv'}) {meaning}",
        f"dataset store stores/bare (version 1) kept no test set's texts {meaning}"]


def test_store_sources_take_their_slot_kind_and_check_names() -> None:
    config = DataConfig(unlabeled={"store": "s", "dataset": "d"}, labeled={"store": "s", "dataset": "d"})
    assert (config.unlabeled.kind, config.labeled.kind) == ("unlabeled", "labeled")
    with pytest.raises(DataError, match="dataset name '../d'"):
        pin_versions(DataConfig(unlabeled={"store": "s", "dataset": "../d"}))


def test_without_a_server_the_cli_sends_no_event(tmp_path: Path, config_file: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    batch = write(tmp_path / "a.csv", rows(1, "a"))
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(["ingest", str(batch), "--dataset", "news", "--store", str(tmp_path / "stores"),
                     "--config", str(config_file)]) == 0
    assert "no event sent: no Prefect server is configured" in capsys.readouterr().out


def read_events(resource_id: str, expected: int) -> list:
    """The ``ipet.data.arrived`` events of one dataset on the server (the server stores them shortly after)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    query = EventFilter(event=EventNameFilter(name=["ipet.data.arrived"]),
                        resource=EventResourceFilter(id=[resource_id]))
    with get_client(sync_client=True) as client:
        for _ in range(60):
            events = client.read_events(filter=query, limit=50).events  # the server allows at most 50
            if len(events) >= expected:
                return events
            time.sleep(0.5)
    return events


def test_ingest_flow_and_cli_announce_new_versions(prefect_harness, tmp_path: Path, config_file: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    store = str(tmp_path / "stores")
    result = ingest(file=str(write(tmp_path / "a.csv", rows(3, "a"))), dataset="flowdata", store=store,
                    config=str(config_file))
    assert result["version"] == 1 and result["event"]
    assert main(["ingest", str(write(tmp_path / "b.csv", rows(2, "b") + rows(1, "a"))), "--dataset", "flowdata",
                 "--store", store]) == 0
    assert "event ipet.data.arrived sent" in capsys.readouterr().out
    repeat = ingest(file=str(tmp_path / "a.csv"), dataset="flowdata", store=store)  # nothing new: no event
    assert not repeat["committed"] and "event" not in repeat

    events = read_events("ipet.dataset.flowdata", expected=2)
    assert len(events) == 2
    first, second = sorted(events, key=lambda e: e.payload["version"])
    assert str(first.id) == result["event"]
    assert first.resource.root == {"prefect.resource.id": "ipet.dataset.flowdata",
                                   "prefect.resource.name": "flowdata"}
    assert first.payload == {"dataset": "flowdata", "version": 1, "kind": "unlabeled", "added": 3,
                             "duplicates": 0, "manifest": str(Path(store).resolve() / "flowdata/versions/v000001.json")}
    assert (second.payload["version"], second.payload["added"], second.payload["duplicates"]) == (2, 2, 1)


def test_validate_reads_the_store_a_config_names(tmp_path: Path, config_file: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    from tiny import save_tiny

    raw = yaml.safe_load(config_file.read_text())
    raw["model"] = str(save_tiny("bert", tmp_path / "bert"))
    raw["ipet"], raw["max_length"] = {"generations": 0}, 64  # the tiny model has 130 positions
    raw["data"]["labeled"] = {"store": "stores", "dataset": "news"}
    config_file.write_text(yaml.safe_dump(raw))
    store = str(tmp_path / "stores")
    assert main(["validate", str(config_file)]) == 2
    assert "no versions yet; add data with `ipet ingest FILE --dataset news`" in capsys.readouterr().err
    ingest_file(write(tmp_path / "a.csv", rows(6, "a")), "news", store, schema=Schema(FIELDS, LABELS))
    ingest_file(write(tmp_path / "g.csv", rows(1, "g") + rows(1, "h", "neg")), "news", store, labeled=True)
    assert main(["validate", str(config_file)]) == 0
    assert "'labeled': 2, 'pool': 6, 'test': 1" in capsys.readouterr().out


def test_a_run_given_a_config_path_records_the_store_versions_it_read(prefect_harness, tmp_path: Path) -> None:
    """A deployment passes the config as a YAML path (not pinned by ``ipet run``'s check): its MLflow
    params and results.json must still name the version it trained on, not ``None``."""
    from mlflow.tracking import MlflowClient

    config = toy_run_config(tmp_path, steps=4, generations=0)
    store = toy_store(tmp_path)
    config["data"] = {"root": str(tmp_path), "labeled": store, "unlabeled": store, "test": {"path": "test.csv"}}
    config["final"] = {"mode": "ensemble"}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    results = ipet(config=str(tmp_path / "run.yaml"), run_dir=str(tmp_path / "run"))
    params = MlflowClient(config["tracking"]["mlflow_uri"]).get_run(results["mlflow_run_id"]).data.params
    assert params["data.labeled.version"] == params["data.unlabeled.version"] == "2"
    stored = yaml.safe_load((tmp_path / "run" / "results.json").read_text())
    assert stored["data_versions"] == {slot: {"store": "stores", "dataset": "toy", "kind": slot, "version": 2}
                                       for slot in ("labeled", "unlabeled")}


def test_the_schema_reads_a_test_store_under_the_configs_data_root(tmp_path: Path, config_file: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A test set from a dataset store is found under data.root, not under the directory the ingest runs in."""
    from flows.ingest import schema_of

    root = tmp_path / "root"
    ingest_file(write(tmp_path / "held.csv", [("held", "out", "pos")]), "held", root / "stores", labeled=True,
                schema=Schema(FIELDS, LABELS))
    raw = yaml.safe_load(config_file.read_text())
    raw["data"] = {"root": str(root), "unlabeled": {"store": "stores", "dataset": "news"},
                   "test": {"store": "stores", "dataset": "held"}}
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    schema = schema_of(RunConfig.model_validate(raw))
    result = ingest_file(write(tmp_path / "a.csv", [("held", "out", "pos"), ("new", "row", "neg")]), "news",
                         root / "stores", schema=schema)
    assert (result["added"], result["duplicates_by_origin"]["test"]) == (1, 1)


def test_the_ingest_flow_fails_a_bad_file_with_its_message(prefect_harness, tmp_path: Path, schema: Schema,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """As a deployment (the UI, a worker): a user mistake fails the run with the one line `ipet ingest`
    prints, no traceback in its logs, and the caller gets the DataError."""
    store = str(tmp_path / "stores")
    ingest_file(write(tmp_path / "good.csv", rows(2, "g")), "news", store, schema=schema)
    (tmp_path / "bad.csv").write_text("title,text\nhello,world\n")
    with pytest.raises(DataError, match=r"bad.csv: missing column\(s\) \['body'\]"):
        ingest(file=str(tmp_path / "bad.csv"), dataset="news", store=store)
    assert "Traceback" not in caplog.text and "bad.csv: missing column(s) ['body']" in caplog.text
    assert DatasetStore(store, "news").current() == 1


def test_a_text_labeled_otherwise_is_reported_not_dropped_silently(tmp_path: Path, schema: Schema,
                                                                  config_file: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """A labeled row whose text already has another label (in the gold set, or an earlier row of the
    file) keeps the earlier label, as a duplicate; the rows are named, in the output and the manifest."""
    store = tmp_path / "stores"
    ingest_file(write(tmp_path / "g.csv", [("r", "2", "neg")]), "news", store, labeled=True, schema=schema)
    batch = write(tmp_path / "l.csv", [("q", "1", "pos"), ("q", "1", "neg"), ("r", "2", "pos"), ("r", "2", "neg"),
                                       ("s", "3", "pos")])
    capsys.readouterr()
    assert main(["ingest", str(batch), "--dataset", "news", "--store", str(store), "--labeled"]) == 0
    out = capsys.readouterr().out
    assert "2 row(s) labeled otherwise than the same text already is, kept as it was: row id(s) ['2', '3']" in out
    version = DatasetStore(store, "news").version()
    assert version.manifest["ingest"]["label_conflicts"] == {"rows": 2, "ids": ["2", "3"]}
    assert sorted(zip(*version.read("labeled").select(["title", "label"]).to_pydict().values())) == [
        ("q", "pos"), ("r", "neg"), ("s", "pos")]


def test_an_unreachable_server_is_not_told_as_a_sent_event(tmp_path: Path, config_file: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    """PREFECT_API_URL set, server down: the version is committed, but no retraining will start and
    ingesting the file again adds nothing; it said "event sent" (exit 0), now what to do by hand."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    batch = write(tmp_path / "a.csv", rows(1, "a"))
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        code = main(["ingest", str(batch), "--dataset", "news", "--store", str(tmp_path / "stores"),
                     "--config", str(config_file)])
    out, err = capsys.readouterr()
    assert code == 69 and "news: version 1 (unlabeled)" in out and "sent (" not in out
    assert err.startswith("ipet ingest: event ipet.data.arrived not sent: the Prefect server at "
                          "http://127.0.0.1:9/api does not answer (ConnectError")
    assert "`prefect event emit ipet.data.arrived --resource-id ipet.dataset.news`" in err
    assert DatasetStore(tmp_path / "stores", "news").current() == 1


@contextlib.contextmanager
def killed_before_the_pointer_moves(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An ingest in this block stops as if killed after writing its version's manifest, before moving CURRENT."""
    import data.dataset_store

    real = data.dataset_store.write_json

    def write_json(obj: object, path: Path) -> Path:
        if Path(path).name == "CURRENT":
            raise KeyboardInterrupt
        return real(obj, path)

    with monkeypatch.context() as patched:
        patched.setattr(data.dataset_store, "write_json", write_json)
        with pytest.raises(KeyboardInterrupt):
            yield


def test_a_version_killed_before_its_commit_is_never_read_and_a_rerun_commits_it(
        tmp_path: Path, schema: Schema, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ingest killed between writing a version's manifest and moving CURRENT: pinning that version
    is refused in one line (it was never committed), and ingesting the file again commits exactly what
    an uninterrupted ingest would have, under the same number, with nothing left of the killed one."""
    batch = write(tmp_path / "b.csv", rows(2, "b"))
    clean, store = tmp_path / "clean", tmp_path / "stores"
    for where in (clean, store):
        ingest_file(write(tmp_path / "a.csv", rows(2, "a")), "news", where, schema=schema)
    ingest_file(batch, "news", clean)

    with killed_before_the_pointer_moves(monkeypatch):
        ingest_file(batch, "news", store)
    assert (store / "news/versions/v000002.json").exists() and DatasetStore(store, "news").current() == 1
    (store / "news/segments/.v000002.parquet.0123456789ab.tmp").write_bytes(b"PAR1")  # what a kill mid-write leaves

    pinned = DataConfig(root=str(tmp_path), unlabeled={"store": "stores", "dataset": "news", "version": 2})
    with pytest.raises(DataError, match=r"version 2 was never committed: .* \(CURRENT is 1\); .* `ipet ingest` again"):
        pin_versions(pinned)
    assert load_sets(DataConfig(root=str(tmp_path), unlabeled={"store": "stores", "dataset": "news"}), FIELDS,
                     LABELS)[0]["pool"].num_rows == 2  # the current version is untouched

    again = ingest_file(batch, "news", store)
    assert (again["version"], again["added"], again["committed"]) == (2, 2, True)
    assert load_sets(pinned, FIELDS, LABELS)[0]["pool"].num_rows == 4
    undated = {path: (bytes if not path.startswith("versions/") else
                      {k: v for k, v in yaml.safe_load(bytes).items() if k != "created"})
               for path, bytes in snapshot(store / "news").items()}
    assert undated == {path: (bytes if not path.startswith("versions/") else
                              {k: v for k, v in yaml.safe_load(bytes).items() if k != "created"})
                       for path, bytes in snapshot(clean / "news").items()}


def test_a_killed_version_below_current_is_never_read(tmp_path: Path, schema: Schema,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A store written while commits took the number past every version on disk: an ingest killed at
    version 2, the next one committed version 3 on version 1. Version 2 is below CURRENT, never committed."""
    store = tmp_path / "stores"
    ingest_file(write(tmp_path / "a.csv", rows(2, "a")), "news", store, schema=schema)
    with killed_before_the_pointer_moves(monkeypatch):
        ingest_file(write(tmp_path / "b.csv", rows(2, "b")), "news", store)
    dataset = DatasetStore(store, "news")
    one = dataset.version(1)
    with dataset.lock():  # the commit those stores made: on version 1, numbered past the killed version 2
        dataset.commit(Version(dataset.directory, {**one.manifest, "version": 2}), "unlabeled",
                       pa.table({"id": ["1"], "title": ["c"], "body": ["text"]}), {"schema": one.manifest["schema"]})
    assert dataset.current() == 3 and dataset.version(3).read("unlabeled")["title"].to_pylist() == ["a 0", "a 1", "c"]
    assert dataset.version(1).number == 1
    with pytest.raises(DataError, match="version 2 was never committed: .* \\(CURRENT is 3\\)"):
        dataset.version(2)


def write_earlier_store(directory: Path, segments: list[tuple[str, list[tuple]]]) -> None:
    """A dataset store as ipet before READER 2 wrote it (2026-12-05 and earlier): one version per segment,
    each a (kind, rows) pair, whose manifest lists its segments without ``reader``; the rows as its typing
    reader had made them of the files; its test set ``test.csv`` beside the store."""
    listed: dict[str, list[dict]] = {"unlabeled": [], "labeled": []}
    for number, (kind, got) in enumerate(segments, start=1):
        columns = ["id", *FIELDS] + (["label"] if kind == "labeled" else [])
        table = pa.table({c: [f"{number}:{i}" for i in range(len(got))] if c == "id" else [r[j - 1] for r in got]
                          for j, c in enumerate(columns)})
        segment = directory / "segments" / f"v{number:06d}.parquet"
        segment.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, segment)
        listed[kind].append({"path": f"segments/{segment.name}", "rows": len(got), "sha256": file_digest(segment)})
        manifest = {"dataset": directory.name, "version": number, "parent": number - 1 or None,
                    "schema": {"fields": list(FIELDS), "labels": list(LABELS),
                               "test": {"path": str(directory.parent.parent / "test.csv")}},
                    "segments": {k: list(v) for k, v in listed.items()},
                    "rows": {k: sum(s["rows"] for s in v) for k, v in listed.items()},
                    "hashes": {k: content_key([s["sha256"] for s in v]) for k, v in listed.items()}}
        (directory / "versions").mkdir(exist_ok=True)
        (directory / "versions" / f"v{number:06d}.json").write_text(json.dumps(manifest))
    (directory / "CURRENT").write_text(str(len(segments)))


def test_a_store_version_an_earlier_reader_ingested_names_the_fields_it_may_have_typed(tmp_path: Path,
                                                                                     schema: Schema) -> None:
    """ipet before READER 2 ingested a CSV column of numbers as numbers (007 kept as 7, 1.50 as 1.5) and no
    file is read again, so a run on such a store read them silently. A field that holds only numbers or
    true/false in a segment of that ipet is named once per store version, with the leaks (``ipet validate``,
    ``ipet run``, the flow: from the prepared data's manifest); a field of words is not, nor the same
    numbers ingested now, and a version ingested now on top of the old ones still is. ``ipet ingest`` into
    such a version, which compares the new rows with them, says so as well."""
    from data.leaks import Leaks
    from flows.ingest import summary

    write_earlier_store(tmp_path / "stores" / "old", [("labeled", [("7", "1.5", "pos"), ("12", "text", "neg")]),
                                                       ("unlabeled", [("a 1", "TRUE"), ("a 2", None)])])
    write_earlier_store(tmp_path / "stores" / "words", [("labeled", [("a 7", "b", "pos"), ("a 9", "c", "neg")]),
                                                         ("unlabeled", [("a 1", "text")])])
    ingest_file(write(tmp_path / "n.csv", [("007", "1.50", "pos"), ("12", "true", "neg")]), "new", tmp_path / "stores",
                labeled=True, schema=schema)
    now = ingest_file(write(tmp_path / "p.csv", [("0012", "x")], header=FIELDS), "new", tmp_path / "stores")
    assert now["typed_fields"] is None and "warning" not in summary(now)

    def warned(dataset: str, run: str) -> list[str]:
        store = {"store": "stores", "dataset": dataset}
        config = DataConfig(root=str(tmp_path), unlabeled=store, labeled=store, test={"path": "test.csv"})
        lines = load_sets(config, FIELDS, LABELS)[1].lines("test.csv")
        assert Leaks.of(prepare(config, FIELDS, LABELS, tmp_path / run)["leaks"]).lines("test.csv") == lines
        return lines

    assert warned("words", "w") == warned("new", "n") == []
    line = ("dataset store stores/old (version 2): field(s) ['title', 'body'] hold only numbers or true/false in "
            "rows ingested by an ipet older than 2026-12-05, which read such a CSV or JSONL column as numbers (007 as "
            "7, 1.50 as 1.5, 7.0 dropped as a duplicate of 7), so they may not be the files' text; to be sure, ipet "
            "ingest those files (its versions/*.json name them) into a new dataset")
    assert warned("old", "o") == [line]  # labeled and pool read one version: one line
    added = ingest_file(write(tmp_path / "q.csv", [("b 1", "words")], header=FIELDS), "old", tmp_path / "stores",
                        schema=schema)  # ipet ingest compared its rows with the typed ones: said too
    assert summary(added).splitlines()[1] == f"warning: {line.replace('stores/old', f'{tmp_path}/stores/old')}"
    assert warned("old", "o") == [line.replace("(version 2)", "(version 3)")]


def test_a_segment_an_earlier_reader_ingested_is_read_for_typed_fields_once(tmp_path: Path, schema: Schema,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Which fields of a segment an earlier reader may have typed is read from the segment once, then from its
    record (``typed/<sha256>.json``): a second load of the version, a load of a later version that lists it and
    an ingest on top read only the rows they use, and warn the same. A store where no record can be written
    (a file in its way) reads the segments every time, as before, and warns the same too."""
    import data.dataset_store

    write_earlier_store(tmp_path / "stores" / "old", [("labeled", [("7", "1.5", "pos"), ("12", "text", "neg")]),
                                                       ("unlabeled", [("a 1", "TRUE"), ("a 2", None)])])
    reads: list[tuple[str, tuple | None]] = []
    real = data.dataset_store.read_segment
    monkeypatch.setattr(data.dataset_store, "read_segment", lambda path, columns=None: reads.append(
        (path.name, columns and tuple(columns))) or real(path, columns))

    def load(dataset: str = "old") -> tuple[list[dict], Counter]:
        store = {"store": "stores", "dataset": dataset}
        reads.clear()
        config = DataConfig(root=str(tmp_path), unlabeled=store, labeled=store, test={"path": "test.csv"})
        return load_sets(config, FIELDS, LABELS)[1].typed_fields, Counter(reads)

    # the rows a load uses: the gold set's (for its slot and for the pool's filter) and the pool's
    rows_read = Counter({("v000001.parquet", None): 2, ("v000002.parquet", None): 1})
    checked = Counter({("v000001.parquet", FIELDS): 1, ("v000002.parquet", FIELDS): 1})
    typed = [{"store": "stores/old", "version": 2, "fields": list(FIELDS)}]
    assert load() == (typed, rows_read + checked)
    assert load() == (typed, rows_read)
    reads.clear()
    added = ingest_file(write(tmp_path / "q.csv", [("b 1", "words")], header=FIELDS), "old", tmp_path / "stores",
                        schema=schema)
    assert added["typed_fields"]["fields"] == list(FIELDS) and not [r for r in reads if r[1]]
    assert load() == ([{**typed[0], "version": 3}], rows_read + Counter({("v000003.parquet", None): 1}))

    write_earlier_store(tmp_path / "stores" / "unwritable", [("labeled", [("7", "1.5", "pos"), ("12", "text", "neg")]),
                                                              ("unlabeled", [("a 1", "TRUE"), ("a 2", None)])])
    (tmp_path / "stores" / "unwritable" / "typed").write_text("in the way of the records")
    unwritable = [{**typed[0], "store": "stores/unwritable"}]
    assert load("unwritable") == load("unwritable") == (unwritable, rows_read + checked)


def test_a_run_directory_prepared_before_typed_fields_were_recorded_is_warned_and_records_them(
        tmp_path: Path, schema: Schema) -> None:
    """A run directory prepared between READER 2 and the typed-fields record (2026-12-05 22:27 to 12-06 01:06) has
    this version's data key, so its data manifest is reused: without them it warned no one (a deployment's run
    has only the manifest's warnings). The reuse finds them and records them, as a preparation now would."""
    from data.leaks import Leaks

    write_earlier_store(tmp_path / "stores" / "old", [("labeled", [("7", "1.5", "pos"), ("12", "text", "neg")]),
                                                       ("unlabeled", [("a 1", "TRUE"), ("a 2", None)])])
    store = {"store": "stores", "dataset": "old"}
    config = DataConfig(root=str(tmp_path), unlabeled=store, labeled=store, test={"path": "test.csv"})
    warned = Leaks.of(prepare(config, FIELDS, LABELS, tmp_path / "run")["leaks"]).lines("test.csv")
    manifest = next((tmp_path / "run").glob("data-*/manifest.json"))
    now = json.loads(manifest.read_text())
    then = {**now, "leaks": {k: v for k, v in now["leaks"].items() if k != "typed_fields"}}
    manifest.write_text(json.dumps(then))
    assert Leaks.of(prepare(config, FIELDS, LABELS, tmp_path / "run")["leaks"]).lines("test.csv") == warned != []
    assert json.loads(manifest.read_text()) == now
