"""Training learners on a separable toy task: hard labels, soft targets, the MLM loss, saving."""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from prompt_core import (PVP, BackboneError, ClassifierLearner, ClozeLearner, Learner, LearnerSpec, TrainConfig,
                         TrainResult, accuracy, build_learner, load_learner, predict_all, save_spec, softmax, train)
from prompt_core.training import soft_target_loss
from tiny import WORDS

POSITIVE = ("great", "wonderful", "good")
NEGATIVE = ("bad", "awful", "terrible")
FILLER = tuple(w for w in WORDS if w not in POSITIVE + NEGATIVE + ("fine", "boring", "not"))
LABELS = ("pos", "neg")
PATTERN = "{text} it was {mask} ."
FAST = dict(learning_rate=1e-3, batch_size=8, device="cpu", seed=0)


def toy_task(n: int, seed: int) -> tuple[list[dict[str, str]], list[int]]:
    """Balanced rows of 3-8 filler words plus one sentiment word; label 0 is pos, 1 is neg."""
    rng = random.Random(seed)
    rows, labels = [], []
    for i in range(n):
        label = i % 2
        words = rng.choices(FILLER, k=rng.randint(3, 8))
        words.insert(rng.randrange(len(words) + 1), rng.choice(NEGATIVE if label else POSITIVE))
        rows.append({"text": " ".join(words)})
        labels.append(label)
    return rows, labels


TRAIN_ROWS, TRAIN_LABELS = toy_task(256, seed=0)
TEST_ROWS, TEST_LABELS = toy_task(200, seed=1)


def toy_spec(kind: str, backbone: Path) -> LearnerSpec:
    if kind == "cloze":
        pvp = PVP.from_dict({"pattern": PATTERN, "verbalizer": {"pos": "great", "neg": "bad"}})
        return LearnerSpec.cloze(str(backbone), pvp, max_length=32)
    return LearnerSpec.classifier(str(backbone), "{text}", LABELS, max_length=32)


def fresh(kind: str, backbone: Path) -> Learner:
    torch.manual_seed(0)  # a classifier's head is freshly initialised
    return build_learner(toy_spec(kind, backbone))


def held_out_accuracy(learner: Learner) -> float:
    return accuracy(predict_all(learner, TEST_ROWS, device="cpu"), TEST_LABELS)


@dataclass
class Trained:
    learner: Learner
    untrained_accuracy: float
    result: TrainResult


@pytest.fixture(scope="module", params=["cloze", "classifier"])
def trained(request: pytest.FixtureRequest, tiny_models: dict[str, Path]) -> Trained:
    learner = fresh(request.param, tiny_models["bert"])
    before = held_out_accuracy(learner)
    result = train(learner, TRAIN_ROWS, TRAIN_LABELS, TrainConfig(min_steps=250, max_steps=250, **FAST), progress=False)
    return Trained(learner, before, result)


# --------------------------------------------------------------------------- hard labels


def test_learner_learns_the_toy_task(trained: Trained) -> None:
    expected_type = ClozeLearner if trained.learner.spec.kind == "cloze" else ClassifierLearner
    assert isinstance(trained.learner, expected_type)
    assert trained.result.steps == len(trained.result.losses) == 250
    assert np.mean(trained.result.losses[-20:]) < 0.5 * np.mean(trained.result.losses[:20])
    after = held_out_accuracy(trained.learner)
    assert trained.untrained_accuracy <= 0.75  # a random tiny model is near chance
    assert after >= 0.9
    assert after >= trained.untrained_accuracy + 0.2


def test_same_seed_gives_identical_losses(tiny_models: dict[str, Path]) -> None:
    def losses(seed: int, global_seed: int) -> list[float]:
        learner = fresh("cloze", tiny_models["bert"])
        torch.manual_seed(global_seed)  # whatever state the caller leaves, train seeds dropout itself
        config = TrainConfig(min_steps=12, max_steps=12, **{**FAST, "seed": seed})
        return train(learner, TRAIN_ROWS[:48], TRAIN_LABELS[:48], config, progress=False).losses

    first = losses(seed=3, global_seed=1)
    assert losses(seed=3, global_seed=2) == first
    assert losses(seed=4, global_seed=1) != first


@pytest.mark.parametrize("peft", [None, {"method": "lora"}], ids=["full", "lora"])
def test_models_loading_in_another_thread_do_not_change_a_training(tiny_models: dict[str, Path], tmp_path: Path,
                                                                    peft: dict | None) -> None:
    """The flow's tasks share one process: a labeling task loads its models (which seeds torch's CPU
    generator and restores it) while another trains on the CPU, whose dropout draws from that generator.
    The trained weights must be the same as with nothing else running (a CI flake's cause)."""
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    save_spec(toy_spec("cloze", tiny_models["bert"]), untrained)
    config = TrainConfig(min_steps=30, max_steps=30, peft=peft, **FAST)

    def weights(while_loading: bool) -> tuple[torch.Tensor, int]:
        learner = fresh("cloze", tiny_models["bert"])
        stop, loads = threading.Event(), []

        def load_again_and_again() -> None:
            while not stop.is_set():
                load_learner(untrained)
                loads.append(1)

        loader = threading.Thread(target=load_again_and_again)
        if while_loading:
            loader.start()
        train(learner, TRAIN_ROWS, TRAIN_LABELS, config, progress=False)
        stop.set()
        if while_loading:
            loader.join()
        return torch.cat([p.detach().flatten() for p in learner.model.parameters()]), len(loads)

    alone, _ = weights(while_loading=False)
    beside_loads, loads = weights(while_loading=True)
    assert loads >= 1
    assert torch.equal(beside_loads, alone)


@pytest.mark.parametrize(
    ("rows", "targets", "message"),
    [([], [], "empty"), (TRAIN_ROWS[:4], [0, 1, 0], "4 rows but 3 targets")],
)
def test_train_rejects_bad_inputs(tiny_models: dict[str, Path], rows: list, targets: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train(fresh("cloze", tiny_models["bert"]), rows, targets, TrainConfig(**FAST), progress=False)


# -------------------------------------------------------------------------- soft targets


def test_soft_target_loss_matches_hand_computation() -> None:
    logits = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    targets = torch.tensor([[2 * math.log(3), 0.0], [1.0, -1.0]])  # at T=2: q = (3/4, 1/4); second row: p = q
    kl_first = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    expected = (kl_first + 0.0) / 2 * 2.0**2  # batch mean, times T²
    assert soft_target_loss(logits, targets, temperature=2.0).item() == pytest.approx(expected, rel=1e-6)


def kl_to_targets(targets: np.ndarray, logits: np.ndarray) -> float:
    q, p = softmax(targets), softmax(logits)
    return float(np.mean(np.sum(q * (np.log(q) - np.log(p)), axis=-1)))


def test_soft_targets_pull_predictions_toward_them(tiny_models: dict[str, Path]) -> None:
    rows, labels = TRAIN_ROWS[:64], np.array(TRAIN_LABELS[:64])
    rng = np.random.default_rng(0)
    margin = rng.uniform(0.5, 2.0, size=len(rows))  # confident for some rows, unsure for others
    targets = np.stack([margin, -margin], axis=1) * np.where(labels == 0, 1, -1)[:, None]
    learner = fresh("cloze", tiny_models["bert"])
    before = kl_to_targets(targets, predict_all(learner, rows, device="cpu"))

    train(learner, rows, targets, TrainConfig(min_steps=150, max_steps=150, temperature=1.0, **FAST), progress=False)

    after = kl_to_targets(targets, predict_all(learner, rows, device="cpu"))
    assert after < 0.25 * before


# ------------------------------------------------------------------------- auxiliary MLM


def test_rows_read_lazily_from_a_table_train_as_the_same_rows_in_a_list(tiny_models: dict[str, Path]) -> None:
    """The tasks train on ``TableRows`` (a big distillation set stays columnar, each batch is
    tokenized when drawn): it must be the very same training as on a list of dicts."""
    import pyarrow as pa

    from data.parquet import TableRows

    rows, labels = TRAIN_ROWS[:40], TRAIN_LABELS[:40]
    table = pa.concat_tables([pa.Table.from_pylist(rows[:25]), pa.Table.from_pylist(rows[25:])])  # two chunks
    config = TrainConfig(min_steps=10, max_steps=10, mlm_weight=0.5, **FAST)

    def run(train_rows, unlabeled) -> list[float]:
        return train(fresh("cloze", tiny_models["bert"]), train_rows, labels, config, unlabeled=unlabeled,
                     progress=False).losses

    assert run(TableRows(table), TableRows(pa.Table.from_pylist(TEST_ROWS[:16]))) == run(rows, TEST_ROWS[:16])


def test_length_grouped_batches_pad_less_cover_every_row_and_still_learn(tiny_models: dict[str, Path]) -> None:
    """``train.group_by_length``: each epoch draws every row once, in batches of about equal length (less
    padding than random batches of the same rows), and the model learns as well."""
    from prompt_core.training import index_batches, length_grouped_batches, token_lengths
    from tasks.models import settings

    learner = fresh("classifier", tiny_models["bert"])
    lengths = token_lengths(learner, TRAIN_ROWS, chunk=100)
    assert lengths == [len(f["input_ids"]) for f in learner.featurize(TRAIN_ROWS)]
    epoch = len(TRAIN_ROWS) // 8
    grouped = length_grouped_batches(lengths, 8, torch.Generator().manual_seed(0))
    first, second = ([next(grouped) for _ in range(epoch)] for _ in range(2))
    assert sorted(i for b in first for i in b) == sorted(i for b in second for i in b) == list(range(len(lengths)))
    assert first != second  # a new order every epoch

    def padding(batches: list[list[int]]) -> float:
        padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
        return 1 - sum(lengths[i] for b in batches for i in b) / padded

    shuffled = index_batches(len(lengths), 8, torch.Generator().manual_seed(0))
    random_padding = padding([next(shuffled) for _ in range(epoch)])
    assert padding(first) < 0.25 * random_padding

    masks: list[torch.Tensor] = []
    collate = learner.collate

    def recording(features):
        batch = collate(features)
        masks.append(batch["attention_mask"])
        return batch

    learner.collate = recording
    train(learner, TRAIN_ROWS, TRAIN_LABELS, TrainConfig(min_steps=250, max_steps=250, group_by_length=True, **FAST),
          progress=False)
    assert len(masks) == 250
    assert 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks) < 0.25 * random_padding
    assert held_out_accuracy(learner) >= 0.9
    assert "group_by_length" not in settings(TrainConfig()), "runs without it keep their model keys"
    assert settings(TrainConfig(group_by_length=True))["group_by_length"] is True


def test_auxiliary_mlm_loss_changes_training(tiny_models: dict[str, Path]) -> None:
    rows, labels = TRAIN_ROWS[:32], TRAIN_LABELS[:32]
    unlabeled = TEST_ROWS[:32]

    def run(mlm_weight: float, with_unlabeled: bool) -> tuple[list[float], np.ndarray]:
        learner = fresh("cloze", tiny_models["bert"])
        config = TrainConfig(min_steps=8, max_steps=8, mlm_weight=mlm_weight, **FAST)
        result = train(learner, rows, labels, config, unlabeled=unlabeled if with_unlabeled else None, progress=False)
        return result.losses, predict_all(learner, rows, device="cpu")

    plain_losses, plain_logits = run(0.0, with_unlabeled=True)
    mlm_losses, mlm_logits = run(1.0, with_unlabeled=True)
    assert all(math.isfinite(loss) for loss in mlm_losses)
    assert mlm_losses != plain_losses and not np.allclose(mlm_logits, plain_logits)
    # the MLM term needs unlabeled rows; without them training is the plain one
    assert run(1.0, with_unlabeled=False)[0] == plain_losses


def test_auxiliary_mlm_loss_needs_a_cloze_learner(tiny_models: dict[str, Path]) -> None:
    config = TrainConfig(min_steps=1, max_steps=1, mlm_weight=1.0, **FAST)
    with pytest.raises(BackboneError, match="cloze"):
        train(fresh("classifier", tiny_models["bert"]), TRAIN_ROWS[:8], TRAIN_LABELS[:8], config,
              unlabeled=TEST_ROWS[:8], progress=False)


# -------------------------------------------------------------------------- save / load


def test_save_and_load_round_trip(trained: Trained, tmp_path: Path) -> None:
    trained.learner.save(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "learner.json"} <= files and "pytorch_model.bin" not in files
    loaded = load_learner(tmp_path)
    assert type(loaded) is type(trained.learner) and loaded.spec == trained.learner.spec
    np.testing.assert_array_equal(predict_all(loaded, TEST_ROWS[:32], device="cpu"),
                                  predict_all(trained.learner, TEST_ROWS[:32], device="cpu"))


def test_saved_spec_loads_as_the_untrained_learner(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    spec = toy_spec("cloze", tiny_models["bert"])
    save_spec(spec, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["learner.json"]
    loaded = load_learner(tmp_path)
    assert loaded.spec == spec
    np.testing.assert_array_equal(predict_all(loaded, TEST_ROWS[:32], device="cpu"),
                                  predict_all(build_learner(spec), TEST_ROWS[:32], device="cpu"))


# --------------------------------------------------------------------------- TrainConfig


@pytest.mark.parametrize(
    "settings",
    [{"lr": 1e-3}, {"device": "tpu"}, {"device": "cuda:first"}, {"learning_rate": 0.0}, {"batch_size": 0}],
)
def test_train_config_rejects_bad_settings(settings: dict) -> None:
    with pytest.raises(ValidationError):
        TrainConfig(**settings)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
def test_train_config_accepts_known_devices(device: str) -> None:
    assert TrainConfig(device=device).device == device
