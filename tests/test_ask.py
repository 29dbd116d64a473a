"""Asking a person (``ask:``): which rows are picked, bad settings and bad answers, and the file
mode end to end on a real Prefect (test harness) and MLflow (SQLite): stop, answer, rerun, continue."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient
from prefect.artifacts import Artifact

from data.answers import write_sheet
from data.errors import DataError
from data.dataset_store import DatasetStore
from flows.asking import pinned_config
from flows.cli import EXIT_BUSY, main
from flows.config import ConfigError, RunConfig, load_config
from flows.ipet import ipet
from prompt_core.asking import PickConfig, farthest_first, pick_rows, text_vectors, vote_entropy
from tasks.pseudo import GOLD_LOGIT
from tiny import toy_run_config, toy_store

ASKED = 4


def test_disagreement_asks_first_where_the_models_split():
    agree = np.array([[2.0, 0.0]] * 4)
    split = agree.copy()
    split[[1, 3]] = [[0.0, 2.0], [0.0, 0.1]]  # rows 1 and 3: the second model votes the other way
    entropy = vote_entropy([agree, split])
    assert entropy[0] == 0 and entropy[1] == pytest.approx(np.log(2))
    # among the split rows, the ensemble is least sure of row 3 (margin 0.05 vs 0): asked first
    assert pick_rows([agree, split], None, ["a", "b", "c", "d"], 2, "disagreement", diversity=False) == [1, 3]
    assert pick_rows([agree, split], None, ["a"] * 4, 3, "random", diversity=False, seed=1) != [1, 3, 0]


def test_diversity_skips_near_duplicates_of_a_row_already_picked():
    texts = ["stocks fall on rate fears", "stocks fall on rate fears !", "team wins the cup final",
             "stocks fall on rate fears today"]
    assert farthest_first(text_vectors(texts), 2) == [0, 2]
    logits = [np.zeros((4, 2)), np.zeros((4, 2))]  # all equally unsure: the first rows come first
    assert pick_rows(logits, None, texts, 2, "uncertainty", diversity=False) == [0, 1]
    assert pick_rows(logits, None, texts, 2, "uncertainty", diversity=True) == [0, 2]


def test_balance_takes_an_equal_share_from_each_label_the_ensemble_guesses():
    # rows 0-3 guessed label 0 and least sure; rows 4-7 guessed label 1, surer
    logits = [np.array([[0.1, 0], [0.2, 0], [0.3, 0], [0.4, 0], [0, 1.0], [0, 1.1], [0, 1.2], [0, 1.3]])]
    texts = [f"row {i}" for i in range(8)]
    assert pick_rows(logits, None, texts, 4, "uncertainty", diversity=False) == [0, 1, 2, 3]
    assert pick_rows(logits, None, texts, 4, "uncertainty", diversity=False, balance=True) == [0, 1, 4, 5]
    assert pick_rows(logits, None, texts, 3, "uncertainty", diversity=True, balance=True) == [0, 1, 4]
    one_of_label_1 = [np.array([[0.1 * (i + 1), 0] for i in range(7)] + [[0, 1.0]])]  # only row 7 is label 1
    assert pick_rows(one_of_label_1, None, texts, 4, "uncertainty", diversity=False, balance=True) == [0, 1, 2, 7]
    # off by default, and then left out of a pick's content key, so earlier requests keep theirs
    assert "balance" not in PickConfig().key() and PickConfig(balance=True).key()["balance"] is True


@pytest.mark.parametrize("after, generations, message", [
    ("ipet-2", 2, "ask.after: ipet-2, but no iPET generation follows it"),
    ("pet-1", 1, "ask.after: String should match pattern"),
])
def test_a_bad_ask_stage_is_one_line_naming_the_field(tmp_path, capsys, after, generations, message):
    config = toy_run_config(tmp_path, generations=generations)
    config["ask"] = {"after": after}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    capsys.readouterr()  # the toy model's saving progress
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.fixture(scope="module")
def store_run(tmp_path_factory) -> dict:
    """A toy task whose gold set and pool come from a dataset store, asking 4 rows after PET; the
    answers go back into the same store. ``yaml``: the config as a user's file."""
    root = tmp_path_factory.mktemp("ask")
    config = toy_run_config(root, steps=10, generations=1)
    store = toy_store(root)
    config["data"] = {"root": str(root), "labeled": store, "unlabeled": store, "test": {"path": "test.csv"}}
    config["final"] = {"train": {"min_steps": 1}}  # distilled: one pass over the 100-row pool
    config["ask"] = {"after": "pet", "rows": ASKED, "store": store}
    (root / "toy.yaml").write_text(yaml.safe_dump(config))
    return {"root": root, "config": RunConfig.model_validate(config), "run_dir": root / "run",
            "yaml": root / "toy.yaml"}


def _run(store_run: dict, run_dir: Path, *sets: str) -> int:
    """``ipet run`` as a user types it (in this process; ``--verbose`` leaves the tests' logging as it is)."""
    return main(["run", str(store_run["yaml"]), "--run-dir", str(run_dir), "--verbose",
                 *[word for s in sets for word in ("--set", s)]])


@pytest.fixture(scope="module")
def asked(prefect_harness, store_run) -> dict:
    """The module's one run to the question: ``ipet run`` stopped after PET. ``said``: what it printed;
    ``rows``: the sheet's rows; ``hidden``: every pool row's true label (the person's answers)."""
    run_dir = store_run["run_dir"]
    with contextlib.redirect_stdout(io.StringIO()) as said:
        assert _run(store_run, run_dir) == 0
    sheet = run_dir / "ask" / "pet.csv"
    hidden = {r["id"]: r["hidden_label"] for r in pq.read_table(next(run_dir.glob("data/pool-*.parquet"))).to_pylist()}
    return {**store_run, "said": said.getvalue(), "sheet": sheet, "rows": list(csv.DictReader(sheet.open())),
            "hidden": hidden}


def test_file_mode_stops_with_a_sheet_and_says_why(asked):
    run_dir, rows = asked["run_dir"], asked["rows"]
    assert f"stopped after pet to ask a person: {ASKED} rows in {asked['sheet']}" in asked["said"]
    assert not (run_dir / "results.json").exists()
    assert len(rows) == ASKED and all(r["label"] == "" and r["guess"] in ("neg", "pos") for r in rows)
    artifact = Artifact.get("ipet-ask-pet")  # what is asked and why, on the flow run
    assert artifact and "unlabeled examples that the 2 models of `pet` disagree on most" in artifact.data
    assert rows[0]["guess"] in artifact.data


def _labels(labels: dict[int, str]):
    """A sheet maker: the asked rows with ``labels`` by row index filled in."""
    return lambda asked, out: _fill(asked["sheet"], out, {asked["rows"][i]["id"]: v for i, v in labels.items()})


def _ids(ids: dict[int, str]):
    """A sheet maker: the first row answered, and the ids of ``ids``'s rows replaced."""
    def make(asked, out):
        _fill(asked["sheet"], out, {asked["rows"][0]["id"]: "skip"})
        for i, new in ids.items():
            out.write_text(out.read_text().replace(f"\n{asked['rows'][i]['id']},", f"\n{new},", 1))
    return make


@pytest.mark.parametrize("make, message", [
    (lambda asked, out: out.write_bytes(asked["sheet"].read_bytes()),  # the sheet as written, nothing filled in
     "{file}: no label filled in (write one, or skip, in the 'label' column of the rows)"),
    (_labels({1: "meh"}), "{file}: row 2 (id {id1!r}): label 'meh' is not one of ['neg', 'pos', 'skip']"),
    (_labels({0: "pso"}), "{file}: row 1 (id {id0!r}): label 'pso' is not one of ['neg', 'pos', 'skip']; "
                          "did you mean 'pos'?"),
    (_labels({0: "neg", 2: "Pos"}), "{file}: row 3 (id {id2!r}): label 'Pos' is not one of ['neg', 'pos', 'skip']; "
                                    "did you mean 'pos'?"),
    (_ids({2: "not-asked"}), "{file}: row 3: id 'not-asked' was not asked after pet"),
    (_ids({i: f"other-{i}" for i in range(ASKED)}), "{file}: its row ids match no question of {run_dir} (open: "),
    (lambda asked, out: out.write_bytes(b"id,label\n\x00\x01"), "{file}: line 2: a NUL byte, so a binary file"),
], ids=["unedited", "unknown label", "typo", "case", "id not asked", "no id asked", "not csv"])
def test_a_bad_sheet_is_one_line_naming_the_row_and_records_nothing(asked, tmp_path, capsys, make, message):
    sheet = tmp_path / "answers.csv"
    make(asked, sheet)
    before = _recorded(asked)
    capsys.readouterr()
    assert main(["answer", str(asked["run_dir"]), str(sheet)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    ids = {f"id{i}": r["id"] for i, r in enumerate(asked["rows"])}
    assert len(err) == 1 and message.format(file=sheet, run_dir=asked["run_dir"], **ids) in err[0], err
    assert _recorded(asked) == before


def test_answering_a_run_directory_that_asked_nothing_is_refused(asked, tmp_path, capsys):
    sheet = tmp_path / "answers.csv"
    _labels({0: "pos"})(asked, sheet)
    for run_dir in (tmp_path / "no-such-run", asked["root"]):  # never asked: no ask/ requests
        assert main(["answer", str(run_dir), str(sheet)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"ipet answer: {run_dir}: no question was asked there (no ask/<stage>-<key>.json): is it "
                       "the run directory of a run with ask: that stopped to ask?"]


def test_a_sheet_filled_in_for_rows_no_longer_asked_is_kept_and_its_labels_carried(asked, tmp_path, capsys):
    run_dir = tmp_path / "run"  # a copy: the module's run directory stays at its question
    shutil.copytree(asked["run_dir"], run_dir)
    sheet = run_dir / "ask" / "pet.csv"
    filled = {r["id"]: "pos" for r in asked["rows"]}
    _fill(asked["sheet"], sheet, filled)  # filled in place, as the stop message says; then the settings change
    written = sheet.read_bytes()
    assert _run(asked, run_dir, f"ask.rows={ASKED + 2}") == 0  # other rows asked: a new sheet
    kept = list((run_dir / "ask").glob("pet-earlier-*.csv"))
    assert len(kept) == 1 and kept[0].read_bytes() == written
    now = list(csv.DictReader(sheet.open()))
    assert len(now) == ASKED + 2 and {r["id"]: r["label"] for r in now} == {r["id"]: filled.get(r["id"], "")
                                                                          for r in now}
    # the kept sheet answers the earlier question: recorded, its answers would never be used; refused
    capsys.readouterr()
    assert main(["answer", str(run_dir), str(kept[0])]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"ipet answer: {kept[0]}: answers the question asked after pet at ")
    assert err[0].endswith(f"), so the next run would not use these answers; answer {sheet} instead"), err
    assert not list((run_dir / "ask").glob("*-answers.*"))  # nothing recorded


def test_write_sheet_keeps_what_a_person_wrote_whichever_question_comes_next(tmp_path):
    def request(ids):
        return {"stage": "pet", "fields": ["text"], "rows": [{"id": i, "text": f"t{i}", "guess": "neg",
                                                              "confidence": 0.5} for i in ids]}

    first, second = request(["a", "b", "c"]), request(["c", "d"])
    sheet = tmp_path / "ask" / "pet.csv"
    assert write_sheet(first, str(tmp_path)) is None and _sheet_labels(sheet) == {"a": "", "b": "", "c": ""}
    _fill(sheet, sheet, {"a": "pos", "c": "neg"})
    assert write_sheet(first, str(tmp_path)) is None  # the same rows asked again: a person's sheet, untouched
    assert _sheet_labels(sheet) == {"a": "pos", "b": "", "c": "neg"}
    assert "1 of them carried over" in write_sheet(second, str(tmp_path))
    assert _sheet_labels(sheet) == {"c": "neg", "d": ""}
    assert "1 of them carried over" in write_sheet(first, str(tmp_path))  # back to the first question
    assert _sheet_labels(sheet) == {"a": "", "b": "", "c": "neg"}
    assert len(list(sheet.parent.glob("pet-earlier-*.csv"))) == 2
    sheet.write_bytes(b"\xff\xfe not a sheet")  # unreadable: kept too, never overwritten unseen
    assert "0 of them carried over" in write_sheet(second, str(tmp_path))
    assert any(p.read_bytes() == b"\xff\xfe not a sheet" for p in sheet.parent.glob("pet-earlier-*.csv"))


def test_only_the_question_the_run_stopped_with_last_is_answered_whichever_was_asked_first(tmp_path):
    """A run asked rows a-c, then (settings changed) c-d, then (changed back) a-c again, which it finds asked
    already: ``ask/pet.csv`` holds a-c, and its answers are what the next run uses, though c-d was asked later.
    The kept sheet of c-d answers a question no run asks now: refused, naming ``ask/pet.csv``."""
    from data.answers import read_sheet, write_request

    def request(key, day, ids):
        return {"stage": "pet", "key": key, "asked_at": f"2024-01-0{day}T00:00:00", "labels": ["neg", "pos"],
                "fields": ["text"], "rows": [{"id": i, "text": f"t{i}", "guess": "neg", "confidence": 0.5}
                                             for i in ids]}

    first, second = request("k1", 1, ["a", "b", "c"]), request("k2", 2, ["c", "d"])
    sheet = tmp_path / "ask" / "pet.csv"
    for asked in (first, second):
        write_request(asked, str(tmp_path))
        write_sheet(asked, str(tmp_path))
        _fill(sheet, sheet, {"c": "pos"})
    assert "kept as" in write_sheet(first, str(tmp_path))  # back to the first question
    assert read_sheet(sheet, str(tmp_path))[0]["key"] == "k1"
    kept = next(p for p in sheet.parent.glob("pet-earlier-*.csv") if "\nd," in p.read_text())
    with pytest.raises(DataError, match=r"answers the question asked after pet at 2024-01-02T00:00:00, not the one "
                                        r"the run stopped with last \(asked at 2024-01-01T00:00:00\), so the next run "
                                        rf"would not use these answers; answer {re.escape(str(sheet))} instead"):
        read_sheet(kept, str(tmp_path))


def test_a_sheet_is_read_with_its_ids_as_written_and_its_labels_as_the_runs(tmp_path):
    """Pool ids ``007``, ``7`` and ``1e3`` were one number to a CSV reader that typed the id column (the sheet
    was refused: ``duplicate id(s) ['7']``); a label written ``1.0`` is the run's label ``1``."""
    from data.answers import read_sheet, write_request

    request = {"stage": "pet", "key": "k", "asked_at": "2024-01-01T00:00:00", "labels": ["1", "2"],
               "fields": ["text"], "rows": [{"id": i, "text": f"t{i}", "guess": "1", "confidence": 0.5}
                                            for i in ("007", "7", "1e3")]}
    write_request(request, str(tmp_path))
    write_sheet(request, str(tmp_path))
    sheet = tmp_path / "ask" / "pet.csv"
    _fill(sheet, sheet, {"007": "1.0", "7": "2", "1e3": ""})
    assert read_sheet(sheet, str(tmp_path))[1] == {"007": "1", "7": "2", "1e3": "skip"}


def test_answers_are_recorded_once_and_the_rerun_continues_past_the_question(asked, capsys):
    run_dir, root, rows, hidden = asked["run_dir"], asked["root"], asked["rows"], asked["hidden"]
    answers = {r["id"]: hidden[r["id"]] for r in rows[:ASKED - 1]}  # the last row is skipped
    filled = run_dir / "filled.csv"
    _fill(asked["sheet"], filled, answers, reorder=True)  # rows reversed, columns moved, a column of one's own
    hold = "import sys, time; from data.lock import run_dir_lock\n" \
           "with run_dir_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n"
    running = subprocess.Popen([sys.executable, "-c", hold, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert running.stdout.readline().strip() == "held"  # a run writing the run directory
    capsys.readouterr()
    assert main(["answer", str(run_dir), str(filled)]) == EXIT_BUSY
    running.kill()
    running.wait()
    assert f"is in use by another run (pid {running.pid})" in capsys.readouterr().err
    assert not list((run_dir / "ask").glob("*-answers.*"))
    assert main(["answer", str(run_dir), str(filled)]) == 0
    assert f"{ASKED - 1} of {ASKED} rows answered after pet · dataset toy version 3" in capsys.readouterr().out
    store = DatasetStore(root / "stores", "toy")
    assert store.current() == 3 and store.version().read("labeled").num_rows == 8 + ASKED - 1
    recorded = _recorded(asked)

    assert main(["answer", str(run_dir), str(filled)]) == 0  # the same answers again: nothing changes
    assert "recorded already" in capsys.readouterr().out and _recorded(asked) == recorded
    changed = run_dir / "changed.csv"
    other = {"neg": "pos", "pos": "neg"}[answers[rows[1]["id"]]]
    _fill(asked["sheet"], changed, {**answers, rows[1]["id"]: other})
    assert main(["answer", str(run_dir), str(changed)]) == 2  # other answers: refused, naming the row
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"row 2 (id {rows[1]['id']!r}): label {other!r}, but {answers[rows[1]['id']]!r} " \
                             "was recorded for it (1 row(s) differ)" in err[0]
    assert _recorded(asked) == recorded

    assert _run(asked, run_dir) == 0  # `ipet run` again, as the stop message says
    said = capsys.readouterr().out
    resumed = json.loads((run_dir / "results.json").read_text())
    assert [s["stage"] for s in resumed["stages"]] == ["zero-shot", "pet", "ipet-1", "final"]
    assert resumed["tasks"] == {"trained": 3, "reused": 2}  # PET (before the question) reused; ipet-1, final trained
    used = f"Asked a person after pet: {ASKED - 1} of {ASKED} rows answered, in the gold set ({8 + ASKED - 1} rows)"
    assert used in next(line for line in said.splitlines() if line.startswith("results: "))
    assert used in (run_dir / "summary.md").read_text()
    assert resumed["ask"] == {"after": "pet", "asked": ASKED, "answered": ASKED - 1, "skipped": 1,
                              "gold_rows": 8 + ASKED - 1, "answers": str(next(run_dir.glob("ask/pet-*-answers.csv")))}
    for path in run_dir.glob("sets/g1-*.parquet"):
        gold = [r for r in pq.read_table(path).to_pylist() if r["source"] == "gold"]
        assert len(gold) == len({r["id"] for r in gold}) == len({r["text"] for r in gold}) == 8 + ASKED - 1
        assert {r["id"]: r["label"] for r in gold if r["id"] in answers} == answers
    # the asked rows stay in the pool: the distilled model learns the answers there, not the ensemble's guesses
    distilled = {r["id"]: r for r in pq.read_table(next(run_dir.glob("sets/final-pool-*.parquet"))).to_pylist()}
    assert len(distilled) == len(hidden) and {i: distilled[i]["label"] for i in answers} == answers
    labels = asked["config"].labels
    assert all(np.argmax(distilled[i]["logits"]) == labels.index(a) and max(distilled[i]["logits"]) == GOLD_LOGIT
               for i, a in answers.items())
    soft = {r["id"]: r for r in pq.read_table(next(run_dir.glob("predictions/final-pool-*.parquet"))).to_pylist()}
    assert all(distilled[i] == soft[i] for i in soft if i not in answers)
    parent = MlflowClient(asked["config"].tracking.mlflow_uri).get_run(resumed["mlflow_run_id"])
    assert parent.data.params["ask.answered"] == str(ASKED - 1) and parent.data.params["ask.store_version"] == "3"

    assert _run(asked, run_dir) == 0  # the store still ends at the answers: same data, all reused
    assert json.loads((run_dir / "results.json").read_text())["tasks"] == {"trained": 0, "reused": 5}


def test_past_the_timeout_a_rerun_goes_on_without_answers(prefect_harness, store_run, tmp_path):
    config = store_run["config"]
    config = config.model_copy(update={"ask": config.ask.model_copy(update={"timeout": 1})})
    assert set(ipet(config=config, run_dir=str(tmp_path / "run"))) == {"asked"}
    client = MlflowClient(config.tracking.mlflow_uri)
    stopped = client.search_runs([client.get_experiment_by_name(config.tracking.experiment).experiment_id],
                                 filter_string=f"tags.run_dir = '{tmp_path / 'run'}'")
    assert [(r.info.status, r.data.tags["ask.outcome"]) for r in stopped] == [
        ("FINISHED", f"stopped after pet to ask a person about {config.ask.rows} rows")], "why it has no final stage"
    time.sleep(1.5)
    finished = ipet(config=config, run_dir=str(tmp_path / "run"))
    assert [s["stage"] for s in finished["stages"]] == ["zero-shot", "pet", "ipet-1", "final"]
    assert not list((tmp_path / "run" / "ask").glob("*-answers.*"))
    parent = MlflowClient(config.tracking.mlflow_uri).get_run(finished["mlflow_run_id"])
    assert parent.data.tags["ask.outcome"] == "timed out, no answers" and "ask.answered" not in parent.data.params
    assert finished["ask"] == {"after": "pet", "asked": ASKED, "answered": 0, "timed_out": True}
    assert "Asked a person after pet: no answers by ask.timeout" in (tmp_path / "run" / "summary.md").read_text()


def test_without_ask_the_config_is_left_as_it_is(tmp_path):
    config = RunConfig.model_validate(toy_run_config(tmp_path))
    assert config.ask is None and pinned_config(config, str(tmp_path)) is config


def _fill(sheet: Path, out: Path, labels: dict[str, str], reorder: bool = False) -> None:
    """``sheet`` with ``labels`` by id in its label column, written to ``out``; ``reorder``: as a person's
    spreadsheet may save it, rows reversed, the label column first and a column of their own added."""
    rows = [{**r, "label": labels.get(r["id"], "")} for r in csv.DictReader(sheet.open())]
    columns = list(rows[0])
    if reorder:
        rows, columns = [{**r, "note": "checked"} for r in rows[::-1]], ["label", "note", *columns[::-1][1:]]
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


def _sheet_labels(sheet: Path) -> dict[str, str]:
    return {r["id"]: r["label"] for r in csv.DictReader(sheet.open())}


def _recorded(asked: dict) -> tuple:
    """What answering may change: the answers' files (names and bytes) and the store's current version."""
    files = {p.name: p.read_bytes() for p in (asked["run_dir"] / "ask").glob("*-answers.*")}
    return files, DatasetStore(asked["root"] / "stores", "toy").current()
