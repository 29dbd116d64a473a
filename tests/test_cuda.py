"""The CUDA paths: training and labeling on a GPU, in bf16 autocast and float32, for each learner kind.

Skipped where torch sees no GPU (CI, this project's CPU machines); run on a lent GPU machine by
``bench/gpu.py``'s device check (bench/RESULTS.md, "GPU"). Imports ``prompt_core`` only, so it runs
on a machine that has torch and transformers but not Prefect or MLflow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from prompt_core import (PVP, LearnerSpec, PeftSettings, SimilarityLearner, Template, TrainConfig, Verbalizer,
                         build_learner, load_learner, predict_all, train)
from prompt_core.label import auto_batch_size
from test_training import LABELS, PATTERN, TEST_LABELS, TEST_ROWS, TRAIN_LABELS, TRAIN_ROWS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CUDA = torch.device("cuda")
STEPS = dict(min_steps=250, max_steps=250, learning_rate=1e-3, batch_size=8, seed=0)


def spec(kind: str, backbone: Path) -> LearnerSpec:
    if kind == "cloze":
        return LearnerSpec.cloze(str(backbone), PVP.from_dict({"pattern": PATTERN,
                                                               "verbalizer": {"pos": "great", "neg": "bad"}}),
                                 max_length=32)
    if kind == "similarity":
        pvp = PVP(Template("{text}"), Verbalizer({"pos": ["it was great ."], "neg": ["it was bad ."]}))
        return SimilarityLearner.spec_for(str(backbone), pvp, temperature=0.05, max_length=32)
    return LearnerSpec.classifier(str(backbone), "{text}", LABELS, max_length=32)


def accuracy(learner, device: str, precision: str = "fp32") -> float:
    logits = predict_all(learner, TEST_ROWS, device=device, precision=precision)
    return float(np.mean(logits.argmax(1) == np.array(TEST_LABELS)))


@pytest.mark.parametrize("kind", ["cloze", "classifier", "similarity"])
@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_each_learner_trains_on_cuda_and_keeps_float32_weights(tiny_models, kind: str, precision: str) -> None:
    """``auto`` is bf16 autocast on CUDA: the weights and the optimizer's state stay float32."""
    torch.manual_seed(0)
    learner = build_learner(spec(kind, tiny_models["bert"]))
    config = TrainConfig(device="cuda", precision=precision, **STEPS)
    result = train(learner, TRAIN_ROWS, TRAIN_LABELS, config, progress=False)
    assert all(p.device.type == "cuda" and p.dtype == torch.float32 for p in learner.parameters())
    assert np.mean(result.losses[-10:]) < 0.5 * np.mean(result.losses[:10])
    assert accuracy(learner, "cuda", precision) > 0.9


def test_labeling_on_cuda_agrees_with_the_cpu(tiny_models) -> None:
    """float32 on the GPU is the CPU's arithmetic up to summation order; bf16 rounds to about 3 digits."""
    learner = build_learner(spec("similarity", tiny_models["bert"]))
    cpu = predict_all(learner, TEST_ROWS, device="cpu", precision="fp32")
    gpu = predict_all(learner, TEST_ROWS, device="cuda", precision="fp32")
    half = predict_all(learner, TEST_ROWS, device="cuda", precision="bf16")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-3)
    assert not np.array_equal(half, gpu), "bf16 was not used"
    np.testing.assert_allclose(half, gpu, rtol=0.05, atol=0.5)  # logits are cosines / 0.05: up to 20


def test_auto_batch_size_is_sized_by_free_gpu_memory(tiny_models) -> None:
    learner = build_learner(spec("classifier", tiny_models["bert"])).to(CUDA)
    rows = auto_batch_size(learner, CUDA)
    assert rows > 64 and rows & (rows - 1) == 0, rows
    np.testing.assert_allclose(predict_all(learner, TEST_ROWS, device="cuda", batch_size="auto", precision="fp32"),
                               predict_all(learner, TEST_ROWS, device="cuda", batch_size=7, precision="fp32"),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("peft", [None, PeftSettings(method="lora"), PeftSettings(method="prefix")],
                         ids=["full", "lora", "prefix"])
def test_a_model_trained_on_cuda_loads_on_the_cpu_with_its_logits(tiny_models, tmp_path: Path, peft) -> None:
    torch.manual_seed(0)
    learner = build_learner(spec("similarity", tiny_models["bert"]))
    config = TrainConfig(device="cuda", peft=peft, **{**STEPS, "min_steps": 20, "max_steps": 20})
    train(learner, TRAIN_ROWS[:64], TRAIN_LABELS[:64], config, progress=False)
    learner.save(tmp_path / "model")
    on_gpu = predict_all(learner, TEST_ROWS, device="cuda", precision="fp32")
    on_cpu = predict_all(load_learner(tmp_path / "model"), TEST_ROWS, device="cpu", precision="fp32")
    np.testing.assert_allclose(on_cpu, on_gpu, rtol=1e-4, atol=1e-3)


def test_compiled_training_on_cuda_learns(tiny_models) -> None:
    """``train.compile``: the encoder compiled with dynamic shapes (every batch has its own length)."""
    torch.manual_seed(0)
    learner = build_learner(spec("classifier", tiny_models["bert"]))
    result = train(learner, TRAIN_ROWS, TRAIN_LABELS, TrainConfig(device="cuda", compile=True, **STEPS), progress=False)
    assert np.mean(result.losses[-10:]) < 0.5 * np.mean(result.losses[:10])
    assert accuracy(learner, "cuda") > 0.9
