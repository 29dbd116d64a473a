"""``ipet predict`` and the predict flow: a tiny classifier, files in every input format, the
model named by path, by run directory and through the registry's champion alias."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from data.errors import DataError
from data.seen import Seen
from flows.cli import main
from flows.predict import predict
from flows.prediction import _check_unique, predict_file
from prompt_core import Predictor
from prompt_core.predictor import save_ensemble
from tasks.registry import CHAMPION, log_staged, stage
from tasks.tracking import experiment_id
from tiny import save_classifier, save_tiny

TEXTS = ["great film", "a bad, awful plot", "", "wonderful story", "   ", "boring", "fine movie", "terrible",
         "it was good"]
BLANK_ROWS = [3, 5]  # 1-based rows whose text is empty or whitespace


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("predict-model")
    return save_classifier(root / "classifier", save_tiny("bert", root / "backbone"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """The same rows as CSV, TSV, JSONL (one row without the key at all) and parquet."""
    root = tmp_path_factory.mktemp("predict-inputs")
    ids = [f"r{i}" for i in range(1, len(TEXTS) + 1)]
    frame = pd.DataFrame({"id": ids, "text": TEXTS, "other": range(len(TEXTS))})
    frame.to_csv(root / "rows.csv", index=False)
    frame.to_csv(root / "rows.tsv", index=False, sep="\t")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), root / "rows.parquet")
    lines = [json.dumps({"id": i, "text": t, "other": n}) for i, t, n in zip(ids, TEXTS, range(len(TEXTS)))]
    lines[4] = json.dumps({"id": ids[4], "other": 4})  # row 5: the text key is missing, not just empty
    (root / "rows.jsonl").write_text("\n".join(lines) + "\n")
    return {fmt: root / f"rows.{fmt}" for fmt in ("csv", "tsv", "jsonl", "parquet")}


def run(*args: str) -> int:
    return main(["predict", *args])


def test_predicts_every_row_and_reports_blank_ones(model, inputs, tmp_path, capsys):
    out = tmp_path / "out.parquet"
    assert run("--model", str(model), "--input", str(inputs["csv"]), "--output", str(out)) == 0
    table = pq.read_table(out)
    labels = json.loads(table.schema.metadata[b"ipet.labels"])
    frame = table.to_pandas()
    assert list(frame.columns) == ["id", "label", *[f"prob_{l}" for l in labels], "model_version", "error"]
    assert list(frame["id"]) == [f"r{i}" for i in range(1, len(TEXTS) + 1)], "every row, in order"
    blank = frame.index.isin([r - 1 for r in BLANK_ROWS])
    assert frame.loc[blank, "label"].isna().all() and frame.loc[blank, "error"].str.startswith("empty text").all()
    assert frame.loc[~blank, "error"].isna().all() and frame.loc[~blank, "label"].notna().all()
    probs = frame[[f"prob_{l}" for l in labels]].to_numpy()
    assert np.allclose(probs[~blank].sum(axis=1), 1.0) and np.isnan(probs[blank]).all()
    # null, not NaN, in the file: what Spark, DuckDB or a JSON export reads as missing (pandas shows NaN)
    assert all(table[f"prob_{l}"].null_count == len(BLANK_ROWS) for l in labels)
    expected = Predictor.load(model).predict([{"text": t} for t in TEXTS])
    assert list(frame.loc[~blank, "label"]) == [l for l in expected.labels if l is not None]
    assert np.allclose(probs[~blank], expected.probabilities[~blank])
    assert set(frame["model_version"]) == {str(model.resolve())}
    printed = capsys.readouterr().out
    assert f"{len(TEXTS)} rows" in printed and "7 predicted, 2 with no text" in printed
    assert "rows with no text (label left empty): 3, 5" in printed


def test_the_number_zero_is_text_not_an_empty_row(model):
    """A Python caller's (or a pyfunc frame's) ``0`` or ``False`` is a value, predicted as its text, as
    ``ipet predict`` predicts the text "0" from a file; only None or a missing field is no text."""
    predictor = Predictor.load(model)
    got = predictor.predict([{"text": 0}, {"text": False}, {"text": None}, {}])
    expected = predictor.predict([{"text": "0"}, {"text": "False"}])
    assert got.errors[:2] == [None, None] and got.labels[:2] == expected.labels
    assert np.allclose(got.probabilities[:2], expected.probabilities)
    assert got.labels[2:] == [None, None] and all(e and e.startswith("empty text") for e in got.errors[2:])


@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "parquet"])
def test_every_format_and_batch_size_gives_the_same_output(model, inputs, tmp_path, fmt):
    reference, out = tmp_path / "csv.parquet", tmp_path / f"{fmt}.parquet"
    assert run("--model", str(model), "--input", str(inputs["csv"]), "--output", str(reference)) == 0
    assert run("--model", str(model), "--input", str(inputs[fmt]), "--output", str(out), "--batch-size", "2") == 0
    got, want = pq.read_table(out).to_pandas(), pq.read_table(reference).to_pandas()
    pd.testing.assert_frame_equal(got, want, check_exact=False, atol=1e-6)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_a_byte_order_mark_and_crlf_lines_read_as_without(model, inputs, tmp_path, fmt):
    """Windows tools (Excel's "CSV UTF-8", PowerShell's Out-File) start a file with a UTF-8 BOM and end
    lines with CRLF: the same rows. A JSONL file with a BOM was refused ("line 1: not valid JSON")."""
    given = tmp_path / f"bom.{fmt}"
    given.write_bytes(b"\xef\xbb\xbf" + inputs[fmt].read_bytes().replace(b"\n", b"\r\n"))
    reference, out = tmp_path / "plain.parquet", tmp_path / "bom.parquet"
    assert run("--model", str(model), "--input", str(inputs[fmt]), "--output", str(reference)) == 0
    assert run("--model", str(model), "--input", str(given), "--output", str(out)) == 0
    pd.testing.assert_frame_equal(pq.read_table(out).to_pandas(), pq.read_table(reference).to_pandas())


def test_precision_reaches_the_model(model, inputs, tmp_path, capsys):
    """``--precision fp32`` is float32 on any CPU (``auto`` is bf16 where the CPU has AMX); each choice
    gives the Predictor's numbers in that precision, and the two differ, so it was not ignored."""
    probs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.parquet"
        assert run("--model", str(model), "--input", str(inputs["csv"]), "--output", str(out),
                   "--precision", precision) == 0
        frame = pq.read_table(out).to_pandas()
        probs[precision] = frame[[c for c in frame.columns if c.startswith("prob_")]].to_numpy()
        expected = Predictor.load(model).predict([{"text": t} for t in TEXTS], precision=precision).probabilities
        np.testing.assert_allclose(probs[precision], expected, atol=1e-6)
    blank = [r - 1 for r in BLANK_ROWS]
    assert not np.allclose(np.delete(probs["fp32"], blank, 0), np.delete(probs["bf16"], blank, 0), atol=1e-6, rtol=0)
    with pytest.raises(SystemExit) as exit_:
        run("--model", str(model), "--input", str(inputs["csv"]), "--output", str(tmp_path / "o.parquet"),
            "--precision", "fp16")
    assert exit_.value.code == 2 and "--precision: invalid choice: 'fp16'" in capsys.readouterr().err
    assert not (tmp_path / "o.parquet").exists()


def test_rows_without_an_id_are_numbered(model, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"text": "great"}\n{"text": "bad", "id": "x"}\n{"text": "fine"}\n')
    assert run("--model", str(model), "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "o.parquet"),
               "--batch-size", "1") == 0
    assert pq.read_table(tmp_path / "o.parquet")["id"].to_pylist() == ["1", "x", "3"]


def test_seen_finds_every_repeat_across_and_within_batches():
    """``Seen`` (8 bytes per id) against a set of the ids themselves, over batches that make its runs merge."""
    rng = np.random.default_rng(0)
    values = [f"id{v}" for v in rng.integers(0, 3000, size=5000)]
    seen, reference, found, expected = Seen(), set(), [], []
    for start in range(0, len(values), 37):
        batch = values[start:start + 37]
        found += [start + at for at in seen.add(batch)]
        assert seen.add([]) == []  # an empty batch (a parquet row group of none) keeps nothing, breaks nothing
        for at, value in enumerate(batch, start=start):
            expected += [at] if value in reference else []
            reference.add(value)
    assert found == expected and len(expected) > 1000


def test_a_hash_collision_is_not_a_duplicate(tmp_path):
    """A candidate ``Seen`` reports (as two different ids sharing a hash would be) is checked against the ids
    read again: unique ids pass, a real repeat is named with both rows."""
    class EverythingSeen(Seen):
        def add(self, values):
            super().add(values)
            return list(range(len(values)))

    path = tmp_path / "ids.csv"
    path.write_text("id,text\na,x\nb,y\nc,z\n")
    _check_unique(str(path), ["a", "b", "c"], range(1, 4), EverythingSeen())
    with pytest.raises(DataError, match="rows 1 and 4 have the same id 'a'"):
        _check_unique(str(path), ["a"], range(4, 5), EverythingSeen())


def test_run_directory_means_its_final_model(model, inputs, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps({"stages": [{"stage": "pet", "model": None},
                                                                 {"stage": "final", "model": str(model)}]}))
    by_dir, by_path = tmp_path / "by-dir.parquet", tmp_path / "by-path.parquet"
    assert run("--model", str(run_dir), "--input", str(inputs["csv"]), "--output", str(by_dir)) == 0
    assert run("--model", str(model), "--input", str(inputs["csv"]), "--output", str(by_path)) == 0
    pd.testing.assert_frame_equal(pq.read_table(by_dir).to_pandas(), pq.read_table(by_path).to_pandas())


def test_a_copied_run_directory_reads_its_own_final_model(model, inputs, tmp_path):
    """results.json records absolute paths; a copy (cp -r) must read its own final model, not the
    original's while that exists, and must keep working once the original is moved away."""
    original = tmp_path / "run"
    final = shutil.copytree(model, original / "models" / "final-distilled-abc")
    (original / "results.json").write_text(json.dumps({"run_dir": str(original),
                                                       "stages": [{"stage": "final", "model": str(final)}]}))
    copy = shutil.copytree(original, tmp_path / "copy")
    for step in ("copied", "original moved"):
        out = tmp_path / f"{step}.parquet"
        assert run("--model", str(copy), "--input", str(inputs["csv"]), "--output", str(out)) == 0, step
        assert set(pq.read_table(out)["model_version"].to_pylist()) == {str(copy / "models" / final.name)}, step
        if step == "copied":
            original.rename(tmp_path / "moved")


def test_a_run_directory_without_its_final_model_says_so(inputs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "models").mkdir(parents=True)
    final = run_dir / "models" / "final-distilled-abc"
    (run_dir / "results.json").write_text(json.dumps({"stages": [{"stage": "final", "model": str(final)}]}))
    assert run("--model", str(run_dir), "--input", str(inputs["csv"]), "--output", str(tmp_path / "o.parquet")) == 2
    assert f"{run_dir}: its final model final-distilled-abc is not in its models/ folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def registry(model, tmp_path_factory) -> dict:
    """A store holding 'ipet-predict' v1 (alias champion) and v2 (the newest, alias challenger, put in stage
    Staging by hand), both the classifier, and 'ipet-empty' without versions; the MLflow run that registered
    them tagged as an iPET run's parent is."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(experiment_id(uri, "predict")).info.run_id
    staged = stage(str(model), tmp_path_factory.mktemp("staged"))  # as register_final_model logs it
    versions = [log_staged(client, run, staged, "ipet-predict", {}) for _ in range(2)]
    client.set_registered_model_alias("ipet-predict", CHAMPION, versions[0])
    client.set_registered_model_alias("ipet-predict", "challenger", versions[1])
    with warnings.catch_warnings():  # stages are deprecated; a user may still set one
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage("ipet-predict", versions[1], "Staging")
    client.create_registered_model("ipet-empty")
    client.set_tag(run, "registry.registered_model", "ipet-predict")
    client.set_tag(run, "registry.version", versions[0])
    logged = {m.artifact_location: m.model_id for m in client.search_logged_models([experiment_id(uri, "predict")])}
    failed = client.create_logged_model(experiment_id(uri, "predict"), name="final-model", source_run_id=run)
    client.finalize_logged_model(failed.model_id, LoggedModelStatus.FAILED)  # a run stopped while registering
    return {"uri": uri, "run": run, "versions": versions, "failed": failed.model_id,
            "logged": [logged[client.get_model_version("ipet-predict", v).source] for v in versions]}


@pytest.mark.parametrize(("how", "version"), [
    (["--model", "champion", "--registered-model", "ipet-predict"], 0),
    (["--model", "champion"], 0),  # the store's only registered model with a champion
    (["--model", "models:/ipet-predict/1"], 0),
    (["--model", "models:/ipet-predict@challenger"], 1),
    (["--model", "models:/ipet-predict/latest"], 1),  # the newest version, as MLflow reads it; not an alias
    (["--model", "models:/ipet-predict/Latest"], 1),
    (["--model", "models:/ipet-predict/staging"], 1),  # a stage, as MLflow reads it: the newest version in it
    (["--model", "models:/ipet-predict/None"], 0),
    (["--model", "models:/{logged[1]}"], 1),  # MLflow 3's logged model id (the UI's "Logged models"): its version
], ids=["champion", "the-only-champion", "version", "alias", "latest", "Latest", "stage-set-by-hand", "stage-None",
        "logged-model-id"])
def test_a_registered_model_predicts_as_the_model_itself(model, inputs, registry, tmp_path, how, version):
    reference, out = tmp_path / "reference.parquet", tmp_path / "registered.parquet"
    how = [arg.format(logged=registry["logged"]) for arg in how]
    assert run("--model", str(model), "--input", str(inputs["csv"]), "--output", str(reference)) == 0
    assert run(*how, "--tracking-uri", registry["uri"], "--input", str(inputs["csv"]), "--output", str(out)) == 0
    got = pq.read_table(out).to_pandas()
    assert set(got["model_version"]) == {f"ipet-predict/v{registry['versions'][version]}"}
    pd.testing.assert_frame_equal(got.drop(columns="model_version"),
                                  pq.read_table(reference).to_pandas().drop(columns="model_version"))


HOLDS = "its aliases: champion (v1), challenger (v2); newest version v2"
NAMES_NOTHING = {  # --model (and options) -> the line ipet predict prints; {uri}, {run}: the registry's
    # MLflow 3 reads /Production as a stage; this registry sets none, it moves aliases
    "stage": (["models:/ipet-predict/Production"], "models:/ipet-predict/Production: no version of 'ipet-predict' is "
              "in stage 'Production': this registry marks versions with aliases, not stages (deprecated since MLflow "
              f"2.9); {HOLDS}; use models:/ipet-predict@champion"),
    "stage-of-a-model-without-versions": (["models:/ipet-empty/Staging"], "models:/ipet-empty/Staging: no version "
                                          "of 'ipet-empty' is in stage 'Staging': this registry marks versions with "
                                          "aliases, not stages (deprecated since MLflow 2.9); it has no aliases; no "
                                          "versions"),
    "missing-version": (["models:/ipet-predict/99"], "models:/ipet-predict/99: registered model 'ipet-predict' has no "
                        f"version 99 in {{uri}} ({HOLDS})"),
    "missing-alias": (["models:/ipet-predict@nope"], "models:/ipet-predict@nope: registered model 'ipet-predict' has no "
                      f"alias 'nope' in {{uri}} ({HOLDS})"),
    "missing-name-misspelled": (["models:/ipet-predcit@champion"], "models:/ipet-predcit@champion: no registered model "
                                "'ipet-predcit' in {uri} (did you mean 'ipet-predict'?)"),
    "missing-name-misspelled-in-other-case": (["models:/IPET-Predcit@champion"], "models:/IPET-Predcit@champion: no "
                                              "registered model 'IPET-Predcit' in {uri} (did you mean 'ipet-predict'?)"),
    "missing-name": (["models:/nope/1"], "models:/nope/1: no registered model 'nope' in {uri} (registered models: "
                     "ipet-empty, ipet-predict)"),
    "champion-of-a-missing-name": (["champion", "--registered-model", "nope"], "models:/nope@champion: no registered "
                                   "model 'nope' in {uri}"),
    "no-versions": (["models:/ipet-empty/latest"], "models:/ipet-empty/latest: registered model 'ipet-empty' has no "
                    "versions in {uri}"),
    "two-names": (["models:/ipet-predict/1", "--registered-model", "other"], "models:/ipet-predict/1 names registered "
                  "model 'ipet-predict', --registered-model 'other'; give one of them"),
    "runs-uri": (["runs:/{run}/final-model"], "runs:/{run}/final-model: ipet predict reads registered models, run "
                 "directories and model directories, not a run's artifacts; its final model is registered as "
                 "models:/ipet-predict/1"),
    "runs-uri-of-a-missing-run": (["runs:/0123abcd/final-model"], "runs:/0123abcd/final-model: no MLflow run "
                                  "'0123abcd' in {uri}"),
    "no-suffix": (["models:/ipet-predict"], "models:/ipet-predict: no version or alias; give "
                  "models:/ipet-predict@champion, models:/ipet-predict/VERSION or models:/ipet-predict/latest "
                  "(models:/m-ID names a logged model by its id)"),
    "missing-logged-model": ([f"models:/m-{'0' * 32}"],
                             f"models:/m-{'0' * 32}: no logged model 'm-{'0' * 32}' in {{uri}}"),
    "unfinished-logged-model": (["models:/{failed}"], "models:/{failed}: logged model 'final-model' is FAILED: its "
                                "logging did not finish (a run stopped while registering it); its run's rerun "
                                "registers the model again"),
    "logged-model-and-a-registered-name": (["models:/{failed}", "--registered-model", "ipet-predict"],
                                           "models:/{failed} names a logged model by its id, whatever it is "
                                           "registered as; leave out --registered-model ipet-predict"),
    "alias-as-suffix": (["models:/ipet-predict/champion"], "models:/ipet-predict/champion: 'champion' is not a version "
                        "number, 'latest' or a stage; an alias is written models:/ipet-predict@champion"),
    "v-version": (["models:/ipet-predict/v1"], "models:/ipet-predict/v1: a version is its number alone: "
                  "models:/ipet-predict/1"),
    "two-slashes": (["models://ipet-predict/1"], "models://ipet-predict/1: expected models:/NAME@ALIAS, "
                    "models:/NAME/VERSION, models:/NAME/latest or models:/m-ID"),  # a traceback
    "a-path-after-the-version": (["models:/ipet-predict/1/x"], "models:/ipet-predict/1/x: expected "
                                 "models:/NAME@ALIAS"),  # a traceback
    "scheme-misspelled": (["model:/ipet-predict@champion"], "model:/ipet-predict@champion: no such model directory, "
                          "run directory or registered model; did you mean models:/ipet-predict@champion?"),
    "champion-misspelled": (["champoin"], "champoin: no such model directory, run directory or registered model; did "
                            "you mean champion?"),
    # a store that cannot be read: each was a traceback, the server's after 4 minutes of MLflow's retries
    "server-unreachable": (["champion", "--tracking-uri", "http://127.0.0.1:9"], "MLflow tracking server "
                           "'http://127.0.0.1:9' is not reachable: "),
    "sqlite-uri-with-two-slashes": (["champion", "--tracking-uri", "sqlite://mlflow.db"], "MLflow store "
                                    "sqlite://mlflow.db cannot be read: Invalid SQLite URL: sqlite://mlflow.db"),
    "not-a-store-uri": (["models:/ipet-predict/1", "--tracking-uri", "htp://host"], "MLflow store htp://host cannot be "
                        "read: Model registry functionality is unavailable; got unsupported URI 'htp://host'"),
    "not-an-sqlite-file": (["champion", "--tracking-uri", "sqlite:///{inputs}"], "MLflow store sqlite:///{inputs} "
                           "cannot be read: (sqlite3.DatabaseError) file is not a database"),
}


@pytest.mark.parametrize("case", list(NAMES_NOTHING))
def test_a_registered_model_uri_that_names_nothing_is_one_line(inputs, registry, tmp_path, capsys, case):
    """Each a user's mistake: exit 2, one line that says what the store holds or how to write the URI,
    no output file."""
    given, says = NAMES_NOTHING[case]
    fill = {"uri": registry["uri"], "run": registry["run"], "inputs": inputs["csv"], "failed": registry["failed"]}
    given = [arg.format(**fill) for arg in given]
    out = tmp_path / "out.parquet"
    uri = [] if "--tracking-uri" in given else ["--tracking-uri", registry["uri"]]
    assert run("--model", *given, *uri, "--input", str(inputs["csv"]), "--output", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ipet predict: {says.format(**fill)}") and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_registered_model_whose_files_are_gone_exits_2(model, inputs, tmp_path, capsys):
    """The registry's copy of the model removed (the artifact store moved or deleted): a message, no traceback."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    version = log_staged(client, client.create_run(experiment_id(uri, "predict")).info.run_id,
                         stage(str(model), tmp_path), "ipet-gone", {})
    (tmp_path / "mlartifacts").rename(tmp_path / "elsewhere")
    assert run("--model", f"models:/ipet-gone/{version}", "--tracking-uri", uri, "--input", str(inputs["csv"]),
               "--output", str(tmp_path / "out.parquet")) == 2
    err = capsys.readouterr().err
    assert f"registered model 'ipet-gone' v{version}: its files cannot be read from file://{tmp_path}" in err
    assert "Traceback" not in err and not (tmp_path / "out.parquet").exists()


def test_an_ensemble_copied_without_its_members_exits_2(model, inputs, tmp_path, capsys):
    run_dir = tmp_path / "run" / "models"
    shutil.copytree(model, run_dir / "member")
    (run_dir / "final").mkdir()
    save_ensemble(run_dir / "final", [run_dir / "member"], None)
    assert run("--model", str(run_dir / "final"), "--input", str(inputs["csv"]),
               "--output", str(tmp_path / "ensemble.parquet")) == 0
    alone = shutil.copytree(run_dir / "final", tmp_path / "elsewhere" / "final")
    assert run("--model", str(alone), "--input", str(inputs["csv"]), "--output", str(tmp_path / "out.parquet")) == 2
    err = capsys.readouterr().err
    assert f"{alone}: ensemble member {tmp_path / 'elsewhere' / 'member'} is missing" in err
    assert "Traceback" not in err and not (tmp_path / "out.parquet").exists()


def _bad_inputs(root: Path) -> dict[str, tuple[Path, str]]:
    good = [f'{i},"text {i} great"' for i in range(1, 8)]
    (root / "ragged.csv").write_text("id,text\n" + "\n".join(good) + "\n8,great,extra\n9,fine\n")
    (root / "nocol.csv").write_text("id,body\n1,great\n")
    (root / "broken.jsonl").write_text('{"text": "great"}\n{"text": "good"}\n{"text": \n')
    (root / "nocol.jsonl").write_text('{"body": "great"}\n')
    (root / "latin1.csv").write_bytes("id,text\n1,caf\xe9 great\n".encode("latin-1"))
    (root / "rows.txt").write_text("great\n")
    (root / "header.csv").write_text("id,text\n")
    (root / "header.tsv").write_text("id\ttext\n")
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}),
                   root / "header.parquet")
    pq.write_table(pa.Table.from_arrays([pa.array(["1"]), pa.array(["great"]), pa.array(["bad"])],
                                        names=["id", "text", "text"]), root / "twice.parquet")
    (root / "dup.csv").write_text("id,text\n" + "".join(f"r{i},great\n" for i in range(1, 6)) + "r2,bad\n")
    (root / "dup.jsonl").write_text('{"id": "a", "text": "great"}\n{"text": "bad"}\n{"id": "2", "text": "fine"}\n')
    return {
        "ragged-row": (root / "ragged.csv", "ragged.csv: 1 malformed row(s); wrong delimiter or unquoted comma? "
                                            "line 9 has 3 columns, expected 2: '8,great,extra'"),
        "missing-column": (root / "nocol.csv", "missing column(s) ['text'] that the model reads"),
        "bad-json-line": (root / "broken.jsonl", "broken.jsonl: line 3: not valid JSON"),  # after one batch
        "missing-json-key-everywhere": (root / "nocol.jsonl", "missing column(s) ['text']"),
        "not-utf8": (root / "latin1.csv", "latin1.csv: line 2: not UTF-8 text"),
        "unknown-format": (root / "rows.txt", "cannot tell the format from the suffix"),
        "no-such-file": (root / "absent.csv", "absent.csv: file not found"),
        "a-directory": (root, f"{root}: is a directory, not a file"),  # it said "file not found"
        "header-only-csv": (root / "header.csv", "header.csv: no rows to predict"),
        "header-only-tsv": (root / "header.tsv", "header.tsv: no rows to predict"),
        "header-only-parquet": (root / "header.parquet", "header.parquet: no rows to predict"),
        "column-named-twice-parquet": (root / "twice.parquet", "twice.parquet: column(s) ['text'] named more "
                                                               "than once in the header; give each column its own name"),
        # rows 2 and 6 (1-based data rows), found in a later batch than the first
        "duplicate-id": (root / "dup.csv", "dup.csv: rows 2 and 6 have the same id 'r2'"),
        # row 2 has no id, so its id is its row number, which row 3 gives as its own
        "duplicate-generated-id": (root / "dup.jsonl", "dup.jsonl: rows 2 and 3 have the same id '2'"),
    }


@pytest.mark.parametrize("case", ["ragged-row", "missing-column", "bad-json-line",
                                  "missing-json-key-everywhere", "not-utf8", "unknown-format", "no-such-file", "a-directory",
                                  "header-only-csv", "header-only-tsv", "header-only-parquet", "duplicate-id",
                                  "duplicate-generated-id", "column-named-twice-parquet"])
def test_bad_input_exits_2_and_writes_nothing(model, tmp_path, capsys, case):
    path, message = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out" / "predictions.parquet"
    assert run("--model", str(model), "--input", str(path), "--output", str(out), "--batch-size", "2") == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == [], "no temporary file left behind"


def test_failed_prediction_leaves_a_previous_output_alone(model, tmp_path):
    out = tmp_path / "predictions.parquet"
    out.write_bytes(b"the previous output")
    path, _ = _bad_inputs(tmp_path)["bad-json-line"]  # fails at line 3, after a batch of 2 was written
    assert run("--model", str(model), "--input", str(path), "--output", str(out), "--batch-size", "2") == 2
    assert out.read_bytes() == b"the previous output" and [p.name for p in tmp_path.glob(".predictions*")] == []


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signalled_prediction_stops_with_one_line_and_leaves_no_partial_file(model, tmp_path, sig, code):
    """Ctrl-C or SIGTERM while the output is being written: exit 130 or 143 with one line, no
    traceback, no temporary beside the output, and the previous output as it was."""
    rows = tmp_path / "many.csv"
    pd.DataFrame({"text": [TEXTS[i % 2] for i in range(200_000)]}).to_csv(rows, index=False)
    out = tmp_path / "out.parquet"
    out.write_bytes(b"the previous output")
    repo = Path(__file__).parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "predict", "--model", str(model), "--input", str(rows),
                             "--output", str(out), "--batch-size", "64"], cwd=tmp_path, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{repo / 'tests'}"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal has it
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not list(tmp_path.glob(".out.parquet.*")):
        time.sleep(0.01)
    assert proc.poll() is None, "signalled while writing"
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == code and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines() == [f"ipet: {sig.name}: ipet predict stopped; {out} was not written "
                                        "(a previous file there is as it was)"]
    assert out.read_bytes() == b"the previous output" and [p.name for p in tmp_path.glob(".out*")] == []


def test_a_prediction_whose_summary_meets_a_closed_pipe_exits_141_quietly(model, inputs, tmp_path):
    """``ipet predict … | head -0``: the reader left before the summary line. Exit 141 (128 + SIGPIPE),
    nothing on stderr, and the finished output kept; it was exit 141 with a traceback of ``Interrupted:
    SIGPIPE``, the signal's handler having run only as the command's block ended."""
    out = tmp_path / "out.parquet"
    read, write = os.pipe()
    os.close(read)
    repo = Path(__file__).parents[1]
    done = subprocess.run([sys.executable, "-m", "flows.cli", "predict", "--model", str(model), "--input",
                           str(inputs["csv"]), "--output", str(out)], stdout=write, stderr=subprocess.PIPE, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{repo / 'tests'}"},
                          timeout=120)
    os.close(write)
    assert (done.returncode, done.stderr) == (141, "")
    assert pq.read_table(out).num_rows == len(TEXTS)


def test_a_rerun_removes_the_temporary_a_killed_prediction_left_and_no_other(model, inputs, tmp_path):
    """``kill -9`` while the output is written leaves its temporary beside it (nothing runs to remove it);
    the same command run again removes it, but neither another output's nor one a live writer holds."""
    rows = tmp_path / "many.csv"
    pd.DataFrame({"text": [TEXTS[i % 2] for i in range(200_000)]}).to_csv(rows, index=False)
    out = tmp_path / "out.parquet"
    killed = _python(["-m", "flows.cli", "predict", "--model", str(model), "--input", str(rows), "--output", str(out),
                      "--batch-size", "64"], tmp_path)
    deadline = time.time() + 120
    while killed.poll() is None and time.time() < deadline and not list(tmp_path.glob(".out.parquet.*")):
        time.sleep(0.01)
    assert killed.poll() is None, "killed while writing"
    killed.kill()
    killed.wait()
    left = {p.name for p in tmp_path.glob(".out.parquet.*")}
    assert len(left) == 1 and not out.exists()
    writer = ("import os, signal, sys; from data.outputs import atomic_path; "
              "w = atomic_path(sys.argv[1]); w.__enter__(); ")  # w: the writer, not closed when collected
    other = _python(["-c", writer + "os.kill(os.getpid(), signal.SIGKILL)", str(tmp_path / "out.parquet.old")],
                    tmp_path)
    live = _python(["-c", writer + "print(flush=True); sys.stdin.read()", str(out)], tmp_path, stdin=subprocess.PIPE)
    try:
        assert other.wait(60) == -signal.SIGKILL and live.stdout.readline() == "\n"
        kept = {p.name for p in tmp_path.glob(".out.parquet.*")} - left
        assert len(kept) == 2, kept
        assert run("--model", str(model), "--input", str(inputs["csv"]), "--output", str(out)) == 0
        assert {p.name for p in tmp_path.glob(".out.parquet.*")} == kept, "the killed run's gone, the others kept"
        assert pq.read_table(out).num_rows == len(TEXTS)
    finally:
        live.communicate("", timeout=60)


def test_an_earlier_ipets_temporary_is_named_not_removed(model, inputs, tmp_path, capsys):
    """An ipet predict from before 2026-12-05 named its temporary ``.<out>.<random>.tmp``, without its writer:
    killed, it is never removed, and it may be one still writing. It is named in one line, and kept."""
    out = tmp_path / "out.parquet"
    earlier = tmp_path / ".out.parquet.0123456789ab.tmp"
    others = [tmp_path / ".other.parquet.0123456789ab.tmp", tmp_path / ".out.parquet.host.1.0123456789ab.tmp"]
    for path in (earlier, *others):
        path.write_bytes(b"half a parquet file")
    assert run("--model", str(model), "--input", str(inputs["csv"]), "--output", str(out)) == 0
    assert capsys.readouterr().err.strip() == (
        f"ipet predict: warning: {earlier.name} beside {out}: left by an ipet predict from before 2026-12-05, "
        "killed or still writing it; remove it once none is running")
    assert earlier.read_bytes() == b"half a parquet file" and all(p.exists() for p in others)
    assert pq.read_table(out).num_rows == len(TEXTS)


def _python(args: list[str], cwd: Path, **popen) -> subprocess.Popen:
    """This repository's Python, as ``ipet`` runs: its stdout read as text."""
    repo = Path(__file__).parents[1]
    return subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{repo / 'tests'}"}, **popen)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_output_onto_the_input_is_refused_and_the_input_kept(model, inputs, tmp_path, capsys, fmt):
    """The output replaces its path when complete: at the input's own path (however spelled) that
    would swap the rows a person gave for the predictions. Refused before the model loads."""
    given = tmp_path / inputs[fmt].name
    given.write_bytes(inputs[fmt].read_bytes())
    spelled = tmp_path / "sub" / ".." / given.name
    (tmp_path / "sub").mkdir()
    for output in (given, spelled):
        assert run("--model", str(model), "--input", str(given), "--output", str(output)) == 2
        err = capsys.readouterr().err
        assert f"--output {output}: is the input file" in err and "Traceback" not in err
    assert given.read_bytes() == inputs[fmt].read_bytes()
    with pytest.raises(DataError, match="is the input file"):  # the flow's path too
        predict_file(model=str(model), input=str(given), output=str(spelled))


def test_a_device_that_is_none_is_refused_before_the_model_loads(inputs, tmp_path, capsys):
    """`--device mps` (which --help once offered) or a typo: one line, exit 2, before torch; it was a traceback
    once the model had loaded. The flow (a deployment's `device` parameter) refuses it the same way."""
    assert run("--model", str(tmp_path / "not-loaded"), "--input", str(inputs["csv"]), "--output",
               str(tmp_path / "o.parquet"), "--device", "mps") == 2
    assert capsys.readouterr().err == "ipet predict: --device: unknown device 'mps': use auto, cpu, cuda or cuda:N\n"
    with pytest.raises(DataError, match="^unknown device 'gpu'"):
        predict_file(model=str(tmp_path / "not-loaded"), input=str(inputs["csv"]), output=str(tmp_path / "o.parquet"),
                     device="gpu")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
def test_cuda_where_there_is_none_is_one_line(model, inputs, tmp_path, capsys):
    """`--device cuda` on a machine without CUDA: one line, exit 2, before the model loads (a traceback at the
    first batch)."""
    assert run("--model", str(model), "--input", str(inputs["csv"]), "--output", str(tmp_path / "o.parquet"),
               "--device", "cuda") == 2
    assert capsys.readouterr().err == "ipet predict: device 'cuda' was asked for, but CUDA is not available here\n"
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_exits_2(inputs, tmp_path, capsys):
    assert run("--model", str(tmp_path / "nothing"), "--input", str(inputs["csv"]),
               "--output", str(tmp_path / "o.parquet")) == 2
    assert "no such model directory, run directory or registered model" in capsys.readouterr().err


def test_an_unfinished_run_directory_is_named_so(inputs, tmp_path, capsys):
    """A run directory whose run was killed before its end (its lock file, maybe some models, no
    results.json) is not a model directory; it said `not a saved model (no learner.json or ensemble.json)`."""
    run_dir = tmp_path / "run"
    (run_dir / "models").mkdir(parents=True)
    (run_dir / ".lock").write_text("1234")
    assert run("--model", str(run_dir), "--input", str(inputs["csv"]), "--output", str(tmp_path / "o.parquet")) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"ipet predict: {run_dir}: no results.json, so not a finished run directory"


def test_the_flow_does_the_same(prefect_harness, model, inputs, tmp_path):
    summary = predict(model=str(model), input=str(inputs["jsonl"]), output=str(tmp_path / "flow.parquet"))
    assert (summary["rows"], summary["errors"]) == (len(TEXTS), 2)
    assert [e["row"] for e in summary["error_rows"]] == BLANK_ROWS
    reference = tmp_path / "cli.parquet"
    assert run("--model", str(model), "--input", str(inputs["jsonl"]), "--output", str(reference)) == 0
    pd.testing.assert_frame_equal(pq.read_table(tmp_path / "flow.parquet").to_pandas(),
                                  pq.read_table(reference).to_pandas())
    with pytest.raises(DataError, match="file not found"):
        predict(model=str(model), input=str(tmp_path / "absent.csv"), output=str(tmp_path / "never.parquet"))
    assert not (tmp_path / "never.parquet").exists()
