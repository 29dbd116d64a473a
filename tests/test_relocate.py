"""A run directory copied or moved (another disk, machine, a colleague's home) and used there: `ipet run`
again reuses every model, `ipet predict --model RUN_DIR` and the registered model read the copy's own
backbone, with an adapted backbone (adapt:) and adapters (train.peft) that hold no backbone of their own."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from flows.cli import main
from flows.config import RunConfig
from flows.ipet import ipet
from flows.prediction import predict_file
from prompt_core import LearnerSpec, PeftSettings, build_learner
from tiny import save_tiny, toy_run_config

models_module = importlib.import_module("tasks.models")


def adapted_lora(root: Path) -> RunConfig:
    """The toy run, small: an adapted backbone in the run directory and LoRA adapters on it."""
    raw = toy_run_config(root, steps=2, generations=1)
    raw["train"]["peft"] = {"method": "lora"}
    raw["adapt"] = {"steps": 2, "learning_rate": 2e-3, "device": "cpu"}
    return RunConfig.model_validate(raw)


def probabilities(model: str, root: Path, out: str, **registry) -> np.ndarray:
    predict_file(model, str(root / "test.csv"), str(root / out), **registry)
    table = pq.read_table(root / out)
    return np.stack([table[c].to_numpy() for c in table.column_names if c.startswith("prob_")], axis=1)


def backbones(run_dir: Path) -> set[str]:
    return {json.loads(spec.read_text())["backbone"] for spec in run_dir.glob("models/*/learner.json")}


def test_a_copy_reruns_on_its_own_adapted_backbone_and_predicts_with_it(prefect_harness, tmp_path: Path) -> None:
    """`cp -r run copy; mv run elsewhere`: every model's learner.json named the original's adapted backbone
    by its absolute path, so predicting from the copy failed (a traceback) and its rerun trained every
    model again (their keys held that path)."""
    config = adapted_lora(tmp_path)
    first = ipet(config=config, run_dir=str(tmp_path / "run"))
    expected = probabilities(str(tmp_path / "run"), tmp_path, "original.parquet")
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    (tmp_path / "run").rename(tmp_path / "moved")
    np.testing.assert_allclose(probabilities(str(tmp_path / "copy"), tmp_path, "copy.parquet"), expected, atol=1e-6)
    assert backbones(tmp_path / "copy") == {f"../../backbones/{Path(first['backbone']).name}"}
    (tmp_path / "moved").rename(tmp_path / "gone")  # nothing of the original is read from here on
    again = ipet(config=config, run_dir=str(tmp_path / "copy"))
    assert again["tasks"] == {"trained": 0, "reused": first["tasks"]["trained"], "backbone_adapted": 0,
                              "backbone_reused": 1}
    assert [s["test_accuracy"] for s in again["stages"]] == [s["test_accuracy"] for s in first["stages"]]
    client = MlflowClient(config.tracking.mlflow_uri)
    version = client.get_model_version(config.registered_model, again["registry"]["version"])
    assert version.tags["backbone"].startswith("bundled: ")  # carried inside the registered model
    registered = probabilities(f"models:/{config.registered_model}/{version.version}", tmp_path, "registered.parquet",
                               tracking_uri=config.tracking.mlflow_uri)
    np.testing.assert_allclose(registered, expected, atol=1e-6)


def test_a_model_directory_copied_without_its_adapted_backbone_says_so(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """An adapter's backbone named relative to the model, or by an absolute path, that is not there: one line,
    exit 2 (transformers took the path for a hub name: a traceback)."""
    backbone = save_tiny("bert", tmp_path / "run" / "backbones" / "adapted-0")
    for name, recorded in (("relative", "../../backbones/adapted-0"), ("absolute", str(backbone))):
        learner = build_learner(LearnerSpec.classifier(str(backbone), "{text}", ("neg", "pos"), max_length=32))
        learner.add_adapter(PeftSettings(method="lora"))
        learner.save(tmp_path / "run" / "models" / name, LearnerSpec.classifier(recorded, "{text}", ("neg", "pos"),
                                                                                  max_length=32))
        (tmp_path / "test.csv").write_text("text\ngreat film\n")
        assert main(["predict", "--model", str(tmp_path / "run" / "models" / name), "--input",
                     str(tmp_path / "test.csv"), "--output", str(tmp_path / f"{name}.parquet")]) == 0
    shutil.copytree(tmp_path / "run" / "models", tmp_path / "alone")
    shutil.rmtree(tmp_path / "run")
    capsys.readouterr()
    for name in ("relative", "absolute"):
        assert main(["predict", "--model", str(tmp_path / "alone" / name), "--input", str(tmp_path / "test.csv"),
                     "--output", str(tmp_path / "out.parquet")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"ipet predict: {tmp_path / 'alone' / name}: its backbone ") and "\n" not in err, err
        assert err.endswith("is not there, and the model has no weights of its own without it (an adapted backbone "
                            "is kept in the run directory: copy or move that whole)")
        assert not (tmp_path / "out.parquet").exists()


def test_a_run_from_before_keeps_its_models_in_place_and_a_copy_of_it_predicts(
        prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run made before backbones were recorded relative to the model (absolute paths in learner.json and
    in the models' keys): rerun in place it reuses every model; a copy predicts with its own backbone."""
    config = adapted_lora(tmp_path).model_copy(update={"ipet": adapted_lora(tmp_path).ipet.model_copy(
        update={"generations": 0})})
    with monkeypatch.context() as before:
        before.setattr(models_module, "recorded", lambda spec, run_dir: spec)
        first = ipet(config=config, run_dir=str(tmp_path / "run"))
    assert backbones(tmp_path / "run") == {first["backbone"]}  # absolute, as earlier versions wrote
    again = ipet(config=config, run_dir=str(tmp_path / "run"))
    assert again["tasks"] == {"trained": 0, "reused": first["tasks"]["trained"], "backbone_adapted": 0,
                              "backbone_reused": 1}
    expected = probabilities(str(tmp_path / "run"), tmp_path, "original.parquet")
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    shutil.rmtree(tmp_path / "run")
    np.testing.assert_allclose(probabilities(str(tmp_path / "copy"), tmp_path, "copy.parquet"), expected, atol=1e-6)
