"""bench/merge_results.py: later benchmark rows join the table of record without overwriting it, and the
merged file's checks compare rows that came from different runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from merge_results import merge  # noqa: E402


def row(mean: float) -> dict:
    return {"mean": mean, "std": 0.0, "per_seed": {"0": mean}, "test_size": 872, "seconds": 1.0,
            "peak_rss_mib": 1.0, "unit": "u", "stage": "final", "stages": {"0": {"pet": mean, "final": mean}}}


NOT_RUN = {"mean": None, "std": None, "per_seed": {}, "status": "not run"}


def write(path: Path, rows: dict, command: str) -> Path:
    path.write_text(json.dumps({"sst2": rows, "meta": {"command": command}}))
    return path


def run_merge(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "merge_results.py"), *map(str, paths)],
                          capture_output=True, text=True)


def test_merge_copies_run_rows_names_their_source_and_leaves_the_rest(tmp_path):
    target = {"sst2": {"iPET (similarity)": row(0.75), "iPET (similarity, LoRA)": NOT_RUN}, "meta": {"command": "a"}}
    source = {"sst2": {"iPET (similarity)": NOT_RUN, "iPET (similarity, LoRA)": row(0.74)}, "meta": {"command": "b"}}
    assert merge(target, source, "peft.json") == ["sst2: iPET (similarity, LoRA)"]
    assert target["sst2"]["iPET (similarity)"]["mean"] == 0.75
    assert target["sst2"]["iPET (similarity, LoRA)"] == {**row(0.74), "source": "peft.json"}
    assert target["meta"]["merged"] == [{"file": "peft.json", "rows": ["sst2: iPET (similarity, LoRA)"],
                                         "meta": {"command": "b"}}]
    merge(target, {**source, "sst2": {"iPET (similarity, LoRA)": row(0.745)}}, "peft.json")  # the same file again
    assert target["sst2"]["iPET (similarity, LoRA)"]["mean"] == 0.745 and len(target["meta"]["merged"]) == 1


def test_a_row_run_in_the_target_is_never_overwritten(tmp_path):
    target = {"sst2": {"iPET (similarity)": row(0.75)}, "meta": {}}
    with pytest.raises(SystemExit, match="'iPET \\(similarity\\)' of other.json is already run"):
        merge(target, {"sst2": {"iPET (similarity)": row(0.70)}}, "other.json")
    assert target["sst2"]["iPET (similarity)"]["mean"] == 0.75


def test_the_command_writes_the_merge_and_prints_the_cross_run_difference(tmp_path):
    target = write(tmp_path / "results.json", {"iPET (similarity)": row(0.750)}, "a")
    source = write(tmp_path / "peft.json", {"iPET (similarity, LoRA)": row(0.742)}, "b")
    done = run_merge(target, source)
    assert done.returncode == 0, done.stderr
    assert "iPET (similarity, LoRA) − iPET (similarity): 0.742 − 0.750 = -0.008 (goal ≥ -0.010: met)" in done.stdout
    assert json.loads(target.read_text())["sst2"]["iPET (similarity, LoRA)"]["source"] == "peft.json"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # the tree's permissions, not a private temporary's
    missing = run_merge(target, tmp_path / "absent.json")
    assert missing.returncode != 0 and missing.stderr.strip().endswith("absent.json: no such results file")
    (tmp_path / "broken.json").write_text("{")
    broken = run_merge(target, tmp_path / "broken.json")
    assert broken.returncode != 0 and "broken.json: not JSON" in broken.stderr and "Traceback" not in broken.stderr
    assert json.loads(target.read_text())["sst2"]["iPET (similarity, LoRA)"]["mean"] == 0.742  # left as it was
