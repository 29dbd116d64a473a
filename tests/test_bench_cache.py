"""bench/accuracy.py's unit cache: a unit is reused only with the code that made it, unless the operator asks
for stale units (``--reuse-stale``), and the outputs say which units came from which code. Fake unit records
only: no model runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import accuracy  # noqa: E402
from accuracy import cached_unit, code_version, reuse_summary, version_tag  # noqa: E402

NEW = {"commit": "b" * 40, "dirty": False, "sources": "s2"}
OLD = {"commit": "a" * 40, "dirty": False, "sources": "s1"}
EDITED = {**NEW, "dirty": True, "diff": "d1"}


def record(version: dict | None, accuracy_: float) -> dict:
    return {"test_accuracy": accuracy_, **({"code_version": version} if version else {})}


def test_a_unit_made_with_other_code_runs_again_and_one_made_with_this_code_is_reused():
    assert cached_unit([record(OLD, 0.7)], NEW, reuse_stale=False) is None
    assert cached_unit([record(None, 0.7)], NEW, reuse_stale=False) is None  # from before versions were kept
    assert cached_unit([record(NEW, 0.8)], EDITED, reuse_stale=False) is None  # uncommitted changes: other code
    assert cached_unit([record(OLD, 0.7), record(NEW, 0.8), record(EDITED, 0.9)], NEW, False) == record(NEW, 0.8)
    assert cached_unit([], NEW, reuse_stale=True) is None


def test_reuse_stale_takes_the_newest_of_other_code_but_this_code_first():
    assert cached_unit([record(None, 0.6), record(OLD, 0.7)], NEW, reuse_stale=True) == record(OLD, 0.7)
    assert cached_unit([record(NEW, 0.8), record(OLD, 0.7)], NEW, reuse_stale=True) == record(NEW, 0.8)


def test_the_summary_line_counts_reused_units_by_the_code_that_made_them():
    results = {(0, "sst2", "similarity"): {**record(NEW, 0.8), "cached": True},
               (0, "sst2", "setfit"): {**record(OLD, 0.7), "cached": True, "stale": True},
               (1, "sst2", "setfit"): {**record(OLD, 0.7), "cached": True, "stale": True},
               (2, "sst2", "setfit"): record(NEW, 0.7)}
    assert reuse_summary(results, NEW) == ("reused 3 of 4 units: 1 made at bbbbbbbbbb (this code), "
                                           "2 made at aaaaaaaaaa (other code: --reuse-stale)")
    assert reuse_summary({(2, "sst2", "setfit"): record(NEW, 0.7)}, NEW) == "reused 0 of 1 units"


def test_version_tags_tell_commits_edits_and_missing_git_apart():
    assert version_tag(NEW) == "bbbbbbbbbb" and version_tag(None) == "unrecorded"
    assert version_tag(EDITED).startswith("bbbbbbbbbb-dirty-")
    assert version_tag(EDITED) != version_tag({**EDITED, "diff": "d2"})
    assert version_tag({"commit": None, "dirty": None, "sources": "s1"}) == "nogit-s1"


def test_the_code_version_is_the_checkouts_commit_or_without_git_its_sources(monkeypatch):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    version = code_version()
    assert version["commit"] == head and version["sources"] == accuracy.code_digest()
    monkeypatch.setattr(accuracy, "git", lambda *args: None)
    assert code_version() == {"commit": None, "dirty": None, "sources": accuracy.code_digest()}


def test_edited_code_is_other_code_but_edited_results_and_notes_are_not(tmp_path, monkeypatch):
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "bench").mkdir()
    for name in ("bench/results.json", "bench/RESULTS.md", "bench/accuracy.py"):
        (tmp_path / name).write_text("0\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    monkeypatch.setattr(accuracy, "ROOT", tmp_path)
    committed = code_version()
    (tmp_path / "bench/results.json").write_text("1\n")  # a benchmark run wrote its table of record
    (tmp_path / "bench/RESULTS.md").write_text("1\n")
    assert code_version() == committed and committed["dirty"] is False
    (tmp_path / "bench/accuracy.py").write_text("1\n")
    edited = code_version()
    assert edited["dirty"] is True and edited != committed
    (tmp_path / "bench/accuracy.py").write_text("2\n")
    assert code_version() != edited  # another edit of the same commit: other code again


def test_a_flow_unit_runs_in_a_directory_of_its_pipeline_code_so_a_rerun_trains_anew(tmp_path, monkeypatch):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "train.py").write_text("STEPS = 8\n")
    monkeypatch.setattr(accuracy, "ROOT", tmp_path)
    before = accuracy.flow_dir(tmp_path / "runs", "sst2", "similarity", 0)
    assert before == accuracy.flow_dir(tmp_path / "runs", "sst2", "similarity", 0)
    assert before.name == "sst2-similarity-s0"
    (tmp_path / "tasks" / "train.py").write_text("STEPS = 9\n")  # a pipeline change: its models are other models
    assert accuracy.flow_dir(tmp_path / "runs", "sst2", "similarity", 0) != before
