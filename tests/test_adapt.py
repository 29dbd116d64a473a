"""Backbone adaptation (TAPT): the prompt_core function, its task, `ipet adapt`, and the flow using it."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import random
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from prefect import flow
from safetensors.torch import load_file

from flows.checks import check_run, unused_adapt_device
from flows.cli import main
from flows.config import RunConfig
from flows.ipet import ipet
import prompt_core
from prompt_core import AdaptConfig, Checkpoints, adapt, load_masked_lm
from prompt_core.backbone import load_tokenizer, mask_for_mlm, mlm_loss
from prompt_core.device import native_bf16
from prompt_core.learners import pad_batch, seeded_loading
from tasks.adapt import adapt_backbone
from tiny import WORDS, save_tiny, toy_run_config

adapt_module = importlib.import_module("prompt_core.adaptation")
TEXTS = [" ".join(random.Random(i).sample(WORDS[:24], 6)) for i in range(96)]
SETTINGS = dict(learning_rate=2e-3, batch_size=16, max_length=32, device="cpu")
CLI_ADAPT = ["--set", "adapt.steps=30", "--set", "adapt.learning_rate=2e-3", "--set", "adapt.device=cpu"]


def fixed_mask_loss(model: torch.nn.Module, tokenizer, texts: list[str], seed: int = 123) -> float:
    """MLM loss on ``texts`` with one fixed draw of masks, so two models are scored on the same task."""
    ids, attention = pad_batch(tokenizer(texts)["input_ids"], tokenizer.pad_token_id)
    inputs, labels = mask_for_mlm(ids, attention, tokenizer, 0.15, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return mlm_loss(model.eval(), inputs, attention, labels).item()


@pytest.fixture(scope="module")
def headless(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny("bert", tmp_path_factory.mktemp("headless") / "bert", headless=True)


@pytest.fixture(scope="module")
def adapted(headless: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("adapted") / "bert"
    return out, adapt(str(headless), TEXTS, AdaptConfig(steps=80, **SETTINGS), out, progress=False)


def test_headless_backbone_gets_a_trained_head_and_saves_a_loadable_masked_lm(
        adapted, caplog: pytest.LogCaptureFixture) -> None:
    out, _ = adapted
    assert "cls.predictions.transform.dense.weight" in load_file(out / "model.safetensors")
    with caplog.at_level(logging.INFO):
        model = load_masked_lm(str(out))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert load_tokenizer(str(out)).mask_token == "[MASK]"


def test_adaptation_lowers_the_mlm_loss_on_its_texts(headless: Path, adapted) -> None:
    out, result = adapted
    tokenizer = load_tokenizer(str(headless))
    with seeded_loading(42):  # the fresh head adapt() started from (AdaptConfig's seed)
        before = fixed_mask_loss(load_masked_lm(str(headless)), tokenizer, TEXTS)
    after = fixed_mask_loss(load_masked_lm(str(out)), tokenizer, TEXTS)
    assert before > 4.0  # about ln(vocabulary) for an untrained head
    assert after < before - 0.8, (before, after)
    assert len(result.losses) == 80
    assert sum(result.losses[-10:]) / 10 < sum(result.losses[:10]) / 10 - 0.8


def test_mlm_loss_is_cross_entropy_at_the_masked_positions(tiny_models: dict[str, Path]) -> None:
    tokenizer, model = load_tokenizer(str(tiny_models["bert"])), load_masked_lm(str(tiny_models["bert"])).eval()
    ids, attention = pad_batch(tokenizer(TEXTS[:6])["input_ids"], tokenizer.pad_token_id)
    inputs, labels = mask_for_mlm(ids, attention, tokenizer, 0.3, torch.Generator().manual_seed(0))
    masked = labels != -100
    assert 0 < masked.sum() < attention.sum() / 2
    with torch.no_grad():
        full = model(input_ids=inputs, attention_mask=attention).logits
        expected = torch.nn.functional.cross_entropy(full[masked], labels[masked])
        assert mlm_loss(model, inputs, attention, labels).item() == pytest.approx(expected.item(), abs=1e-5)


def test_adapt_projects_onto_the_vocabulary_at_masked_rows_only(tiny_models: dict[str, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    masked, projected = [], []
    backbone = importlib.import_module("prompt_core.backbone")

    def spy_mask(*args, **kwargs):
        inputs, labels = mask_for_mlm(*args, **kwargs)
        masked.append(int((labels != -100).sum()))
        return inputs, labels

    def spy_scores(model, transformed, token_ids=None):
        projected.append(transformed.shape[0])
        return vocab_scores(model, transformed, token_ids)

    vocab_scores = backbone.vocab_scores
    monkeypatch.setattr(adapt_module, "mask_for_mlm", spy_mask)
    monkeypatch.setattr(backbone, "vocab_scores", spy_scores)
    adapt(str(tiny_models["bert"]), TEXTS, AdaptConfig(steps=4, **SETTINGS), tmp_path, progress=False)
    assert projected == masked and len(projected) >= 4 and all(n > 0 for n in projected)


def test_adapt_rejects_texts_with_nothing_to_mask(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to adapt on"):
        adapt(str(tiny_models["bert"]), ["", "  "], AdaptConfig(steps=1, **SETTINGS), tmp_path, progress=False)


def test_task_reuses_its_output(prefect_harness, tiny_models: dict[str, Path], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(len(TEXTS))], "text": TEXTS}), pool)
    calls = []
    # the task imports adapt when it runs (so importing the flow stays fast): replaced where it is found
    monkeypatch.setattr(prompt_core, "adapt", lambda *a, **kw: calls.append(1) or adapt(*a, **kw))

    def run(steps: int) -> dict:
        config = AdaptConfig(steps=steps, **SETTINGS)
        return adapt_backbone(str(tiny_models["bert"]), str(pool), ["text"], config, str(tmp_path / "run"))

    @flow(name="adapt-three-times")
    def three_times() -> list[dict]:
        return [run(3), run(3), run(2)]

    first, second, other = three_times()
    assert (first["reused"], second["reused"], other["reused"]) == (False, True, False)
    assert first["model_dir"] == second["model_dir"] != other["model_dir"]
    assert Path(first["model_dir"]).parent == tmp_path / "run" / "backbones"
    assert len(calls) == 2 and len(second["losses"]) == 3


def saved_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(Path(model_dir) / "model.safetensors")


def stop_at(step: int, on_log=None):
    """An ``on_log`` that stops the adaptation after ``step`` as Ctrl-C would (after ``on_log``'s own work)."""
    def log(at: int, loss: float) -> None:
        if on_log:
            on_log(at, loss)
        if at == step:
            raise KeyboardInterrupt(f"killed after step {at}")
    return log


@pytest.fixture(scope="module")
def uninterrupted(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """8 steps on the tiny BERT (dropout 0.1, so the generator's state matters) without a stop: (dir, result)."""
    out = tmp_path_factory.mktemp("uninterrupted") / "bert"
    return out, adapt(str(tiny_models["bert"]), TEXTS, AdaptConfig(steps=8, **SETTINGS), out, progress=False)


def test_killed_adaptation_goes_on_from_its_checkpoint_to_the_weights_it_would_have_had(
        tiny_models: dict[str, Path], uninterrupted, tmp_path: Path) -> None:
    states: list[bytes] = []

    def save(state: dict) -> None:  # serialized at once, as a file would be: the state holds the live tensors
        buffer = io.BytesIO()
        torch.save(state, buffer)
        states.append(buffer.getvalue())

    config = AdaptConfig(steps=8, **SETTINGS)
    with pytest.raises(KeyboardInterrupt):
        adapt(str(tiny_models["bert"]), TEXTS, config, tmp_path / "killed", progress=False, on_log=stop_at(3),
              checkpoints=Checkpoints(save, seconds=0))
    assert len(states) == 3 and not (tmp_path / "killed").exists()
    last = torch.load(io.BytesIO(states[-1]), weights_only=True)
    assert last["step"] == 3

    steps: list[int] = []
    checkpoints = Checkpoints(save, seconds=0, resume=last)
    resumed = adapt(str(tiny_models["bert"]), TEXTS, config, tmp_path / "resumed", progress=False,
                    on_log=lambda step, _: steps.append(step), checkpoints=checkpoints)
    assert steps == [4, 5, 6, 7, 8]  # not from step 1
    assert checkpoints.resume is None and len(states) == 3 + 4  # let go of once restored; no save after the last step
    reference, expected = uninterrupted
    assert resumed.losses == expected.losses
    weights, reference_weights = saved_weights(tmp_path / "resumed"), saved_weights(reference)
    assert weights.keys() == reference_weights.keys()
    assert all(torch.equal(weights[k], reference_weights[k]) for k in weights)


def adaptation_killed_once(tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           steps: list[int]):
    """A flow adapting the tiny BERT 8 steps into ``tmp_path / "run"``, saving a checkpoint after every step,
    whose first call is killed after step 3 as Ctrl-C would; ``steps`` gets every step taken."""
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(len(TEXTS))], "text": TEXTS}), pool)
    tasks_adapt = importlib.import_module("tasks.adapt")
    monkeypatch.setattr(tasks_adapt, "CHECKPOINT_SECONDS", 0)

    def killed_once(*args, on_log, **kwargs):
        log = stop_at(3, on_log) if not steps else on_log
        return adapt(*args, on_log=lambda step, loss: steps.append(step) or log(step, loss), **kwargs)

    monkeypatch.setattr(prompt_core, "adapt", killed_once)

    @flow(name="adapt-killed-then-rerun")
    def adapt_flow() -> dict:
        return adapt_backbone(str(tiny_models["bert"]), str(pool), ["text"], AdaptConfig(steps=8, **SETTINGS),
                              str(tmp_path / "run"))

    return adapt_flow


def test_task_killed_mid_adaptation_resumes_on_the_rerun_and_then_drops_its_checkpoint(
        prefect_harness, tiny_models: dict[str, Path], uninterrupted, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[int] = []
    adapt_flow = adaptation_killed_once(tiny_models, tmp_path, monkeypatch, steps)
    backbones = tmp_path / "run" / "backbones"
    with pytest.raises(KeyboardInterrupt):
        adapt_flow()
    [checkpoint] = backbones.iterdir()  # no backbone directory: only the checkpoint, hidden, a file
    assert re.fullmatch(r"\.adapted-[0-9a-f]{16}\.checkpoint\.pt", checkpoint.name) and checkpoint.is_file()
    assert torch.load(checkpoint, weights_only=True)["step"] == 3

    result = adapt_flow()
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]  # the rerun took steps 4 to 8 only
    assert [p.name for p in backbones.iterdir()] == [Path(result["model_dir"]).name]  # the checkpoint is gone
    reference, expected = uninterrupted
    assert result["losses"] == expected.losses
    weights, reference_weights = saved_weights(result["model_dir"]), saved_weights(reference)
    assert all(torch.equal(weights[k], reference_weights[k]) for k in reference_weights)


def test_gc_of_a_finished_run_removes_the_checkpoint_a_killed_adaptation_left(
        prefect_harness, tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """An adaptation killed, then its settings changed: no rerun goes on from its checkpoint (another key),
    and the run finishes beside it. ``ipet gc`` frees it, counted with the models; ``--keep all`` removes
    nothing."""
    from prompt_core.predictor import SPEC_FILE

    with pytest.raises(KeyboardInterrupt):
        adaptation_killed_once(tiny_models, tmp_path, monkeypatch, [])()
    run = tmp_path / "run"
    [checkpoint] = (run / "backbones").iterdir()
    size = checkpoint.stat().st_size
    final = run / "models" / "final-distilled-ff"  # the run finished with other adaptation settings
    final.mkdir(parents=True)
    (final / SPEC_FILE).write_text("{}")
    (run / "results.json").write_text(json.dumps({"stages": [{"stage": "final", "model": str(final)}]}))
    assert main(["gc", str(run), "--keep", "all"]) == 0 and checkpoint.is_file()
    assert "removed 0 model directories, freed 0.0 MB" in capsys.readouterr().out
    assert main(["gc", str(run)]) == 0
    assert not checkpoint.exists() and [p.name for p in run.rglob("*") if p.is_file()].count(SPEC_FILE) == 1
    out = capsys.readouterr().out
    assert size > 100_000 and (f"removed 0 model directories and 1 killed adaptation's checkpoint, freed "
                               f"{size / 1e6:.1f} MB;") in out, out


# ------------------------------------------------------------------------ ipet adapt, and ipet run


@pytest.fixture(scope="module")
def toy_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("toy-adapt") / "toy.yaml"
    path.write_text(yaml.safe_dump(toy_run_config(path.parent, steps=2, generations=0)))
    return path


@pytest.fixture(scope="module")
def cli_adapted(prefect_harness, toy_yaml: Path, tmp_path_factory: pytest.TempPathFactory):
    """``ipet adapt`` on the toy config: (exit code, stdout, run dir)."""
    run_dir = tmp_path_factory.mktemp("adapt-run")
    out = io.StringIO()  # capsys is per test; this runs once for the module
    with contextlib.redirect_stdout(out):
        code = main(["adapt", str(toy_yaml), "--run-dir", str(run_dir), *CLI_ADAPT])
    return code, out.getvalue(), run_dir


def test_cli_prints_zero_shot_accuracy_before_and_after(cli_adapted) -> None:
    code, out, run_dir = cli_adapted
    assert code == 0, out
    assert "| PVP | zero-shot before (test) | after |" in out
    rows = re.findall(r"^\| `(.+)` \| (\d\.\d{4}) \| (\d\.\d{4}) \|$", out, re.MULTILINE)
    assert [r[0] for r in rows] == ["{text} it was {mask} .", "{mask} : {text}"]
    assert all(0 <= float(v) <= 1 for r in rows for v in r[1:])
    model_dir = Path(re.search(r"usable as `model:`: (\S+)", out).group(1))
    assert model_dir.parent == run_dir / "backbones" and (model_dir / "model.safetensors").exists()


def test_cli_scores_no_zero_shot_before_adapting_a_checkpoint_without_an_mlm_head(
        prefect_harness, toy_yaml: Path, headless: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Its head starts random: no prior before adaptation (not a random head's score), and one after."""
    assert main(["adapt", str(toy_yaml), "--run-dir", str(tmp_path / "run"), "--set", f"model={headless}",
                 *CLI_ADAPT]) == 0
    rows = re.findall(r"^\| `(.+)` \| (\S+) \| (\S+) \|$", capsys.readouterr().out, re.MULTILINE)
    assert [r[1] for r in rows] == ["–", "–"] and all(0 <= float(r[2]) <= 1 for r in rows), rows


def test_cli_adapts_a_classifier_whose_label_names_are_no_words_of_the_model(
        prefect_harness, toy_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A classifier's verbalizer only names the labels; `ipet run` takes 'okayish', so `ipet adapt` must too:
    no cloze reading of it to score zero-shot (it refused the config), the backbone adapted all the same."""
    assert main(["adapt", str(toy_yaml), "--run-dir", str(tmp_path / "run"), "--set", "learner=classifier",
                 "--set", "verbalizer.neg=okayish", *CLI_ADAPT[2:], "--set", "adapt.steps=3"]) == 0  # not 30
    out = capsys.readouterr().out
    rows = re.findall(r"^\| `(.+)` \| (\S+) \| (\S+) \|$", out, re.MULTILINE)
    assert [r[1:] for r in rows] == [("–", "–"), ("–", "–")] and "over 3 steps" in out, out


def test_validate_warns_that_a_run_adapts_where_it_trains_not_on_adapt_device(
        toy_yaml: Path, capsys: pytest.CaptureFixture) -> None:
    """A user who sets ``adapt.device`` for ``ipet run`` expects it to matter; it does only in ``ipet adapt``,
    which is not warned (nor is a run whose adapt.device is its train.device)."""
    assert main(["validate", str(toy_yaml), "--set", "adapt.device=cuda"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        f"{toy_yaml}: warning: adapt.device: cuda is ipet adapt's; ipet run adapts the backbone where it trains "
        "(train.device: cpu)"]
    config = RunConfig.model_validate({**yaml.safe_load(toy_yaml.read_text()), "adapt": {"device": "cuda"}})
    assert check_run(config.for_adaptation(), adapting=True).warnings == []
    same = config.model_copy(update={"adapt": config.adapt.model_copy(update={"device": "cpu"})})
    assert unused_adapt_device(same) is None and unused_adapt_device(config) is not None


@pytest.mark.parametrize("override, field", [("adapt.steps=0", "adapt.steps"), ("adapt.stepz=3", "adapt.stepz")])
def test_cli_rejects_a_bad_adapt_setting(toy_yaml: Path, capsys: pytest.CaptureFixture, override: str,
                                         field: str) -> None:
    assert main(["adapt", str(toy_yaml), "--set", override]) == 2
    assert f"{toy_yaml}: {field}: " in capsys.readouterr().err


def test_run_with_adapt_trains_every_learner_from_the_adapted_backbone(cli_adapted, toy_yaml: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Same settings and run dir as ``ipet adapt``: the flow reuses its backbone and builds on it. Its
    ``adapt.device`` (not a setting of the backbone's key) is ``ipet adapt``'s: the flow warns so, once."""
    _, out, run_dir = cli_adapted
    adapted_dir = re.search(r"usable as `model:`: (\S+)", out).group(1)
    raw = yaml.safe_load(toy_yaml.read_text())
    raw.update(adapt={"steps": 30, "learning_rate": 2e-3, "device": "auto"}, final={"mode": "ensemble"})
    results = ipet(config=RunConfig.model_validate(raw), run_dir=str(run_dir))
    unused = ("warning: adapt.device: auto is ipet adapt's; ipet run adapts the backbone where it trains "
              "(train.device: cpu)")
    assert caplog.messages.count(unused) == 1, caplog.messages
    assert results["backbone"] == adapted_dir
    assert results["tasks"] == {"trained": 2, "reused": 0, "backbone_adapted": 0, "backbone_reused": 1}
    pet = {d: json.loads((d / "learner.json").read_text()) for d in (run_dir / "models").glob("g0-*")}
    assert len(pet) == 2 and {s["backbone"] for s in pet.values()} == {f"../../backbones/{Path(adapted_dir).name}"}
    assert {(d / s["backbone"]).resolve() for d, s in pet.items()} == {Path(adapted_dir).resolve()}  # relative to it
    after = re.findall(r"^\| `.+` \| \d\.\d{4} \| (\d\.\d{4}) \|$", out, re.MULTILINE)
    zero_shot = results["stages"][0]
    assert [f"{m['test_accuracy']:.4f}" for m in zero_shot["models"]] == after  # the adapted backbone's
    client = MlflowClient(raw["tracking"]["mlflow_uri"])
    children = client.search_runs([client.get_experiment_by_name("toy").experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{results['mlflow_run_id']}'")
    adapt_child = next(c for c in children if c.info.run_name == "adapt")
    assert adapt_child.data.tags["reused"] == "true"
    trained = client.search_runs([adapt_child.info.experiment_id], filter_string=(  # by ipet adapt, before the run
        f"tags.reused = 'false' and tags.model_dir = '{adapt_child.data.tags['model_dir']}'"))
    assert [adapt_child.data.tags["reused_from"]] == [r.info.run_id for r in trained]
    native = "bf16" if native_bf16(torch.device("cpu")) else "fp32"  # adapt.precision: auto, on the CPU
    assert (adapt_child.data.tags["precision.used"], adapt_child.data.tags["device.used"]) == (native, "cpu")
    parent = client.get_run(results["mlflow_run_id"]).data.params  # the same key for one adaptation in any run dir
    assert parent["backbone"] == f"backbones/{Path(adapted_dir).name}" and parent["model"] == raw["model"]
    assert len(client.get_metric_history(adapt_child.info.run_id, "loss")) == 30
