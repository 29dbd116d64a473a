"""Parameter-efficient learners (``train.peft``): every method on every learner kind, trained on
the tiny BERT, saved as an adapter, reloaded in a fresh process, predicted with, and loaded back
from the MLflow registry as a pyfunc; several adapters labeling through one shared backbone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from flows.cli import main
from flows.config import ConfigError, load_config
from prompt_core import (PVP, BackboneError, LearnerSpec, PeftSettings, Predictor, TrainConfig, build_learner,
                         load_learner, load_learners, predict_all, train)
from prompt_core.settings import LabelingConfig
from tasks.models import label_set, settings
from tasks.registry import log_staged, stage
from tasks.tracking import experiment_id
from tiny import save_tiny

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("lora", "prompt", "ptuning", "prefix")
KINDS = ("cloze", "classifier", "similarity")
ROWS = [{"text": t} for t in ("great film", "a bad movie", "good story", "awful plot", "wonderful actors",
                              "terrible boring film", "it was fine", "the plot was bad")]
LABELS = [0, 1, 0, 1, 0, 1, 0, 1]  # pos, neg
ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors", "learner.json"]


def spec(kind: str, backbones: dict[str, Path]) -> LearnerSpec:
    """The cloze learner on a headless BERT (its MLM head is fresh, so it trains with the adapter)."""
    if kind == "cloze":
        pvp = PVP.from_dict({"pattern": "{text} it was {mask} .", "verbalizer": {"pos": "great", "neg": "bad"}})
        return LearnerSpec.cloze(str(backbones["headless"]), pvp, max_length=32)
    if kind == "classifier":
        return LearnerSpec.classifier(str(backbones["bert"]), "{text}", ("pos", "neg"), max_length=32)
    return LearnerSpec("similarity", str(backbones["bert"]), "{text}", ("pos", "neg"),
                       {"pos": ["great", "good"], "neg": ["bad"]}, max_length=32, temperature=0.05)


def peft_train(method: str, seed: int = 0) -> TrainConfig:
    options = {"lora": {}, "prompt": {"virtual_tokens": 4, "init_text": "it was great or bad"}}.get(
        method, {"virtual_tokens": 4})
    return TrainConfig(min_steps=6, max_steps=6, batch_size=4, device="cpu", seed=seed,
                       peft=PeftSettings(method=method, **options))


@pytest.fixture(scope="module")
def backbones(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("peft-backbones")
    return {"bert": save_tiny("bert", root / "bert"), "headless": save_tiny("bert", root / "headless", headless=True)}


@pytest.fixture(scope="module")
def trained(backbones, tmp_path_factory) -> dict[tuple[str, str], dict]:
    """Every method × kind trained and saved: its directory, logits before and after training, and
    whether the backbone's weights stayed as they were."""
    root, out = tmp_path_factory.mktemp("peft-models"), {}
    for method in METHODS:
        for kind in KINDS:
            learner = build_learner(spec(kind, backbones))
            frozen = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
            before = predict_all(learner, ROWS, device="cpu")
            train(learner, ROWS, LABELS, peft_train(method), progress=False)
            backbone_kept = all(torch.equal(frozen[n], p) for n, p in learner.model.named_parameters()
                                if n in frozen)  # LoRA's own weights are new names
            learner.save(root / f"{method}-{kind}")
            # what is served is what was saved: p-tuning saves its prompt encoder's output, computed in float32,
            # where the model in memory recomputes it in bf16 under `precision: auto` on a CPU with AMX
            out[method, kind] = {"dir": root / f"{method}-{kind}", "before": before, "backbone_kept": backbone_kept,
                                 "after": predict_all(load_learner(root / f"{method}-{kind}"), ROWS, device="cpu")}
    return out


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", KINDS)
def test_training_moves_only_the_adapter_and_saves_only_it(trained, backbones, method, kind):
    t = trained[method, kind]
    assert not np.allclose(t["before"], t["after"]), "training changed nothing"
    assert t["backbone_kept"], "the backbone's weights moved"
    assert sorted(p.name for p in t["dir"].iterdir()) == ADAPTER_FILES
    adapter = (t["dir"] / "adapter_model.safetensors").stat().st_size
    assert adapter * 5 < (backbones["bert"] / "model.safetensors").stat().st_size  # a tenth on MiniLM
    assert json.loads((t["dir"] / "learner.json").read_text())["backbone"] == spec(kind, backbones).backbone


FRESH_PROCESS = """
import sys, numpy as np, torch
from prompt_core import load_learner, predict_all
torch.set_num_threads(1)  # as the tests run: the same sums in the same order
rows = [{"text": t} for t in sys.argv[2:]]
out = {d: predict_all(load_learner(d), rows, device="cpu") for d in sys.argv[1].split(",")}
np.savez(sys.stdin.readline().strip(), **{str(i): v for i, v in enumerate(out.values())})
"""


def test_reloaded_in_a_fresh_process_every_adapter_gives_identical_logits(trained, tmp_path):
    keys = sorted(trained)
    out = tmp_path / "logits.npz"
    subprocess.run([sys.executable, "-c", FRESH_PROCESS, ",".join(str(trained[k]["dir"]) for k in keys),
                    *(r["text"] for r in ROWS)], input=f"{out}\n", text=True, check=True, cwd=ROOT,
                   env={"PYTHONPATH": str(ROOT), "PATH": ""}, capture_output=True)
    logits = np.load(out)
    for i, k in enumerate(keys):
        assert np.array_equal(logits[str(i)], trained[k]["after"]), k


@pytest.mark.parametrize("method", METHODS)
def test_ipet_predict_reads_adapter_models(trained, method, tmp_path):
    """``ipet predict`` on each kind's adapter directory: the learner's own probabilities."""
    pd.DataFrame({"text": [r["text"] for r in ROWS]}).to_csv(tmp_path / "in.csv", index=False)
    for kind in KINDS:
        out = tmp_path / f"{kind}.parquet"
        assert main(["predict", "--model", str(trained[method, kind]["dir"]), "--input", str(tmp_path / "in.csv"),
                     "--output", str(out)]) == 0
        probs = pq.read_table(out).to_pandas()[["prob_pos", "prob_neg"]].to_numpy()
        logits = trained[method, kind]["after"]
        expected = np.exp(logits - logits.max(1, keepdims=True))
        np.testing.assert_allclose(probs, expected / expected.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_registered_adapters_carry_their_local_backbone_and_load_as_pyfuncs(trained, backbones, tmp_path):
    """Each method × kind logged to the registry: its version bundles the backbone (a local directory,
    deleted here before loading, as on another machine) and says so; the pyfunc predicts as we do."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    parent = client.create_run(experiment_id(uri, "peft")).info.run_id
    moved = {name: tmp_path / name for name in backbones}
    for name, path in backbones.items():
        shutil.copytree(path, moved[name])
    versions = {}
    for (method, kind), t in sorted(trained.items()):
        copy = tmp_path / "models" / f"{method}-{kind}"
        shutil.copytree(t["dir"], copy)
        spec_file = copy / "learner.json"  # named by a backbone that disappears before loading
        spec_file.write_text(spec_file.read_text().replace(str(backbones["bert"].parent), str(tmp_path)))
        with tempfile.TemporaryDirectory() as staging:  # as register_final_model stages and logs it
            versions[method, kind] = log_staged(client, parent, stage(str(copy), Path(staging)), "ipet-peft", {})
    bundled_tags = {client.get_model_version("ipet-peft", v).tags["backbone"] for v in versions.values()}
    assert bundled_tags == {f"bundled: {moved['headless']}", f"bundled: {moved['bert']}"}
    for path in moved.values():
        shutil.rmtree(path)  # the registered versions must not need it
    mlflow.set_tracking_uri(uri)
    try:
        for key, version in versions.items():
            got = mlflow.pyfunc.load_model(f"models:/ipet-peft/{version}").predict(pd.DataFrame(
                {"text": [r["text"] for r in ROWS]}))
            logits = trained[key]["after"]
            expected = np.exp(logits - logits.max(1, keepdims=True))
            np.testing.assert_allclose(got[["prob_pos", "prob_neg"]].to_numpy(float),
                                       expected / expected.sum(1, keepdims=True), rtol=1e-5, atol=1e-6, err_msg=key)
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("method", ["lora", "prefix"])
def test_adapters_of_one_backbone_label_through_it_once(prefect_harness, backbones, method, tmp_path):
    """Three adapters (seeds) of one cloze PVP: ``load_learners`` loads the backbone once, and one
    labeling task writes each model's logits exactly as that model alone gives them."""
    dirs = []
    for seed in (1, 2, 3):
        learner = build_learner(spec("cloze", backbones))
        train(learner, ROWS, LABELS, peft_train(method, seed), progress=False)
        learner.save(tmp_path / f"s{seed}")
        dirs.append(tmp_path / f"s{seed}")
    shared = load_learners(dirs)
    assert len({id(learner.model) for learner in shared}) == 1
    alone = [predict_all(load_learner(d), ROWS, device="cpu") for d in dirs]
    assert not np.allclose(alone[0], alone[1])
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(len(ROWS))], "text": [r["text"] for r in ROWS]}), pool)
    results = label_set({f"s{i}": str(d) for i, d in enumerate(dirs)}, "pool", str(pool), str(tmp_path / "run"),
                        LabelingConfig(batch_size=4))
    for i, expected in enumerate(alone):
        got = np.stack(pq.read_table(results[f"s{i}"]["path"])["logits"].to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    again = label_set({f"s{i}": str(d) for i, d in enumerate(dirs)}, "pool", str(pool), str(tmp_path / "run"),
                      LabelingConfig(batch_size=4))
    assert all(r["reused"] for r in again.values())


def test_peft_settings_are_part_of_the_model_key_and_absent_when_off():
    plain = TrainConfig()
    assert "peft" not in settings(plain), "runs without peft keep their model keys"
    lora = settings(TrainConfig(peft=PeftSettings(method="lora")))
    assert lora["peft"]["method"] == "lora"
    assert lora != settings(TrainConfig(peft=PeftSettings(method="lora", rank=4)))
    assert TrainConfig(peft=PeftSettings(method="prefix")).rate == 1e-2 and plain.rate == plain.learning_rate
    assert "prior_weight" not in settings(plain), "runs that do not keep the prior keep their model keys"
    assert settings(TrainConfig(prior_weight=1.0))["prior_weight"] == 1.0


@pytest.mark.parametrize(("override", "says"), [
    (["train.peft.method=adapterx"], "train.peft.method: Input should be 'lora', 'prompt', 'ptuning' or 'prefix'"),
    (["train.peft.method=prompt", "train.peft.rank=4"], "train.peft: rank is an option of lora, not of method 'prompt'"),
    (["train.peft.rank=4"], "train.peft.method: Field required"),
    (["train.peft.method=lora", "train.peft.virtual_tokens=0"], "train.peft.virtual_tokens"),
])
def test_bad_peft_settings_are_one_line_naming_the_field(override, says):
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "examples" / "agnews.yaml", override)
    assert str(err.value).count("\n") == 0 and says in str(err.value)


def test_prefix_tuning_refuses_an_encoder_without_an_attention_cache(tiny_models, tmp_path, capsys):
    """DistilBERT takes no per-layer keys and values: ``ipet validate`` says so in one line before a
    run starts, and a learner refuses the adapter rather than train a prefix it would ignore."""
    from tiny import toy_run_config

    learner = build_learner(LearnerSpec.classifier(str(tiny_models["distilbert"]), "{text}", ("pos", "neg")))
    with pytest.raises(BackboneError, match="train.peft.method: prefix needs an encoder"):
        learner.add_adapter(PeftSettings(method="prefix"))
    raw = {**toy_run_config(tmp_path), "model": str(tiny_models["distilbert"]), "learner": "classifier"}
    (tmp_path / "run.yaml").write_text(json.dumps(raw))
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "run.yaml"), "--set", "train.peft.method=prefix"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.peft.method: prefix needs an encoder" in err and "'distilbert'" in err
    assert main(["validate", str(tmp_path / "run.yaml"), "--set", "train.peft.method=prompt"]) == 0
    for section in ("pet.train", "final.train"):  # named where it was set: the line to edit
        assert main(["validate", str(tmp_path / "run.yaml"), "--set", f"{section}.peft.method=prefix"]) == 2
        assert capsys.readouterr().err.strip().endswith(f"run.yaml: {section}.peft.method: prefix needs an encoder "
                                                        "that takes each layer's keys and values (the BERT and "
                                                        "RoBERTa families do); a 'distilbert' model does not, so use "
                                                        "lora, prompt or ptuning")


def test_flow_with_lora_keeps_adapters_only_and_states_the_disk(prefect_harness, tmp_path):
    """The toy run with ``train.peft``: every trained model (PET, iPET and the distilled one) is an
    adapter on the tiny BERT, the summary states the run directory's size, the registered final
    model bundles its backbone, and a second run reuses every model."""
    from flows.config import RunConfig
    from flows.ipet import ipet
    from tiny import toy_run_config

    raw = toy_run_config(tmp_path, labeled_per_class=4, steps=10, generations=1)
    raw["train"]["peft"] = {"method": "lora"}
    config = RunConfig.model_validate(raw)
    results = ipet(config=config, run_dir=str(tmp_path / "run"))
    trained = [d for d in (tmp_path / "run" / "models").iterdir() if not d.name.startswith("zero-shot")]
    assert len(trained) == 2 * 2 + 1
    for model in trained:
        assert sorted(p.name for p in model.iterdir()) == sorted(["metrics.json", *ADAPTER_FILES]), model.name
    backbone_bytes = (Path(config.model) / "model.safetensors").stat().st_size
    assert 0 < results["disk"]["models_bytes"] < len(trained) * backbone_bytes / 5
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert f"of which models {results['disk']['models_bytes'] / 2**20:.1f} MiB" in summary
    client = MlflowClient(config.tracking.mlflow_uri)
    version = client.get_model_version(config.registered_model, results["registry"]["version"])
    assert version.tags["backbone"] == f"bundled: {config.model}"
    again = ipet(config=config, run_dir=str(tmp_path / "run"))
    assert again["tasks"] == {"trained": 0, "reused": len(trained)}


def test_flow_with_a_pet_adapter_trains_the_generations_in_full(prefect_harness, tmp_path, caplog):
    """``pet.train.peft``: the PET stage's models are adapters and label the pool through one shared
    backbone, the generation's and the distilled models are whole models, and a rerun reuses them all."""
    from flows.config import RunConfig
    from flows.ipet import ipet
    from tiny import toy_run_config

    raw = toy_run_config(tmp_path, labeled_per_class=4, steps=10, generations=1)
    raw["pet"] = {"train": {"peft": {"method": "lora"}}}
    config = RunConfig.model_validate(raw)
    results = ipet(config=config, run_dir=str(tmp_path / "run"))
    models = {d.name: sorted(p.name for p in d.iterdir()) for d in (tmp_path / "run" / "models").iterdir()}
    pet = [n for n in models if n.startswith("g0-")]
    later = [n for n in models if n.startswith(("g1-", "final-"))]
    assert len(pet) == 2 and len(later) == 2 + 1
    assert all(models[n] == sorted(["metrics.json", *ADAPTER_FILES]) for n in pet), models
    assert all("model.safetensors" in models[n] and "adapter_config.json" not in models[n] for n in later), models
    assert "labeled pool with g0-p0-s1, g0-p1-s1;" in caplog.text, "the PET adapters label in one task"
    assert "labeled pool with g1-p0-s1;" in caplog.text, "whole models label one by one"
    again = ipet(config=config, run_dir=str(tmp_path / "run"))
    assert again["tasks"] == {"trained": 0, "reused": len(pet) + len(later)}
    assert [s["test_accuracy"] for s in again["stages"]] == [s["test_accuracy"] for s in results["stages"]]
