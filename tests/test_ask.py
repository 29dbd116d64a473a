"""Asking a person (``ask:``): which rows are picked, bad settings and bad answers, and the file
mode end to end on a real Prefect (test harness) and MLflow (SQLite): stop, answer, rerun, continue."""

from __future__ import annotations

import csv
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
    answers go back into the same store."""
    root = tmp_path_factory.mktemp("ask")
    config = toy_run_config(root, steps=10, generations=1)
    store = toy_store(root)
    config["data"] = {"root": str(root), "labeled": store, "unlabeled": store, "test": {"path": "test.csv"}}
    config["final"] = {"train": {"min_steps": 1}}  # distilled: one pass over the 100-row pool
    config["ask"] = {"after": "pet", "rows": ASKED, "store": store}
    return {"root": root, "config": RunConfig.model_validate(config), "run_dir": root / "run"}


def test_file_mode_stops_then_answers_rerun_and_continue(prefect_harness, store_run, capsys):
    config, run_dir, root = store_run["config"], store_run["run_dir"], store_run["root"]
    stopped = ipet(config=config, run_dir=str(run_dir))
    sheet = run_dir / "ask" / "pet.csv"
    assert set(stopped) == {"asked"} and not (run_dir / "results.json").exists()
    asked = list(csv.DictReader(sheet.open()))
    assert len(asked) == ASKED and all(r["label"] == "" and r["guess"] in ("neg", "pos") for r in asked)
    artifact = Artifact.get("ipet-ask-pet")  # what is asked and why, on the flow run
    assert artifact and "unlabeled examples that the 2 models of `pet` disagree on most" in artifact.data
    assert asked[0]["guess"] in artifact.data

    hidden = {r["id"]: r["hidden_label"] for r in pq.read_table(next(run_dir.glob("data/pool-*.parquet"))).to_pylist()}
    capsys.readouterr()  # the run's own logging
    assert main(["answer", str(run_dir), str(sheet)]) == 2  # the sheet as written, nothing filled in
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("pet.csv: no label filled in (write one, or skip, in the 'label' "
                                             "column of the rows)")
    assert not list((run_dir / "ask").glob("*-answers.*"))
    bad = run_dir / "bad.csv"
    _fill(sheet, bad, {asked[1]["id"]: "meh"})
    capsys.readouterr()  # the run's own logging
    assert main(["answer", str(run_dir), str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"row 2 (id {asked[1]['id']!r}): label 'meh'" in err[0]
    assert not list((run_dir / "ask").glob("*-answers.*")) and DatasetStore(root / "stores", "toy").current() == 2
    _fill(sheet, bad, {asked[0]["id"]: "skip"})
    bad.write_text(bad.read_text().replace(f"\n{asked[2]['id']},", "\nnot-asked,", 1))  # an id that was not asked
    assert main(["answer", str(run_dir), str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("bad.csv: row 3: id 'not-asked' was not asked after pet")
    assert not list((run_dir / "ask").glob("*-answers.*"))

    answers = {r["id"]: hidden[r["id"]] for r in asked[:ASKED - 1]}  # the last row is skipped
    _fill(sheet, run_dir / "filled.csv", answers)
    hold = "import sys, time; from data.lock import run_dir_lock\n" \
           "with run_dir_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n"
    running = subprocess.Popen([sys.executable, "-c", hold, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert running.stdout.readline().strip() == "held"  # a run writing the run directory
    assert main(["answer", str(run_dir), str(run_dir / "filled.csv")]) == EXIT_BUSY
    running.kill()
    running.wait()
    assert f"is in use by another run (pid {running.pid})" in capsys.readouterr().err
    assert not list((run_dir / "ask").glob("*-answers.*"))
    assert main(["answer", str(run_dir), str(run_dir / "filled.csv")]) == 0
    capsys.readouterr()
    assert main(["answer", str(run_dir), str(run_dir / "filled.csv")]) == 2  # once is enough
    assert "the question after pet was answered already (" in capsys.readouterr().err
    store = DatasetStore(root / "stores", "toy")
    assert store.current() == 3 and store.version().read("labeled").num_rows == 8 + ASKED - 1

    resumed = ipet(config=config, run_dir=str(run_dir))
    assert [s["stage"] for s in resumed["stages"]] == ["zero-shot", "pet", "ipet-1", "final"]
    assert resumed["tasks"] == {"trained": 3, "reused": 2}  # PET (before the question) reused; ipet-1, final trained
    for path in run_dir.glob("sets/g1-*.parquet"):
        gold = {r["id"]: r["label"] for r in pq.read_table(path).to_pylist() if r["source"] == "gold"}
        assert len(gold) == 8 + ASKED - 1 and {i: gold[i] for i in answers} == answers
    # the asked rows stay in the pool: the distilled model learns the answers there, not the ensemble's guesses
    distilled = {r["id"]: r for r in pq.read_table(next(run_dir.glob("sets/final-pool-*.parquet"))).to_pylist()}
    assert len(distilled) == len(hidden) and {i: distilled[i]["label"] for i in answers} == answers
    labels = config.labels
    assert all(np.argmax(distilled[i]["logits"]) == labels.index(a) and max(distilled[i]["logits"]) == GOLD_LOGIT
               for i, a in answers.items())
    soft = {r["id"]: r for r in pq.read_table(next(run_dir.glob("predictions/final-pool-*.parquet"))).to_pylist()}
    assert all(distilled[i] == soft[i] for i in soft if i not in answers)
    parent = MlflowClient(config.tracking.mlflow_uri).get_run(resumed["mlflow_run_id"])
    assert parent.data.params["ask.answered"] == str(ASKED - 1) and parent.data.params["ask.store_version"] == "3"

    again = ipet(config=config, run_dir=str(run_dir))  # the store still ends at the answers: same data, all reused
    assert again["tasks"] == {"trained": 0, "reused": 5}


def test_past_the_timeout_a_rerun_goes_on_without_answers(prefect_harness, store_run, tmp_path):
    config = store_run["config"]
    config = config.model_copy(update={"ask": config.ask.model_copy(update={"timeout": 1})})
    assert set(ipet(config=config, run_dir=str(tmp_path / "run"))) == {"asked"}
    time.sleep(1.5)
    finished = ipet(config=config, run_dir=str(tmp_path / "run"))
    assert [s["stage"] for s in finished["stages"]] == ["zero-shot", "pet", "ipet-1", "final"]
    assert not list((tmp_path / "run" / "ask").glob("*-answers.*"))
    parent = MlflowClient(config.tracking.mlflow_uri).get_run(finished["mlflow_run_id"])
    assert parent.data.tags["ask.outcome"] == "timed out, no answers" and "ask.answered" not in parent.data.params


def test_without_ask_the_config_is_left_as_it_is(tmp_path):
    config = RunConfig.model_validate(toy_run_config(tmp_path))
    assert config.ask is None and pinned_config(config, str(tmp_path)) is config


def _fill(sheet: Path, out: Path, labels: dict[str, str]) -> None:
    rows = list(csv.DictReader(sheet.open()))
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "label": labels.get(r["id"], "")} for r in rows)
