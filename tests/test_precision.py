"""Precision: bf16 autocast where the chip multiplies bf16 natively, float32 elsewhere or when asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from prompt_core import (PVP, AdaptConfig, LabelingConfig, SimilarityLearner, Template, TrainConfig, Verbalizer,
                         build_learner, predict_all, train)
from prompt_core.device import autocast, computed_on, native_bf16
from tasks.models import settings
from tiny import save_tiny

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    return save_tiny("bert", tmp_path_factory.mktemp("encoder"), headless=True)


def learner(encoder: Path) -> SimilarityLearner:
    pvp = PVP(Template("{text}"), Verbalizer({"neg": ["it was terrible ."], "pos": ["it was great ."]}))
    return build_learner(SimilarityLearner.spec_for(str(encoder), pvp, temperature=0.05, max_length=32))


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype a CPU matmul computes in under ``autocast(cpu, precision)``."""
    with autocast(CPU, precision):
        return torch.ones(2, 2) @ torch.ones(2, 2)


@pytest.mark.parametrize("amx, avx512_bf16", [(True, False), (False, True), (True, True), (False, False)])
def test_auto_is_bf16_on_a_cpu_only_with_bf16_in_hardware(monkeypatch, amx: bool, avx512_bf16: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    native = amx or avx512_bf16
    assert native_bf16(CPU) is native and native_bf16(torch.device("cuda"))
    assert autocast_dtype("auto").dtype == (torch.bfloat16 if native else torch.float32)
    assert autocast_dtype("bf16").dtype == torch.bfloat16, "bf16 when asked, whatever the chip"
    assert autocast_dtype("fp32").dtype == torch.float32, "fp32 when asked, whatever the chip"
    assert computed_on("cpu", "auto") == {"precision": "bf16" if native else "fp32", "device": "cpu"}
    assert [computed_on("cpu", p)["precision"] for p in ("bf16", "fp32")] == ["bf16", "fp32"]


def test_labeling_computes_in_the_precision_asked(encoder: Path) -> None:
    """bf16 rounds the encoder's activations (about 3 digits), so its logits differ from float32's, a little."""
    model = learner(encoder)
    rows = [{"text": "the movie was great"}, {"text": "awful"}, {"text": "a film"}]
    full, half = (predict_all(model, rows, device="cpu", precision=p) for p in ("fp32", "bf16"))
    assert not np.array_equal(full, half), "bf16 was not used"
    np.testing.assert_allclose(half, full, rtol=0.05, atol=0.5)  # logits are cosines / 0.05: up to 20
    np.testing.assert_array_equal(predict_all(model, rows, device="cpu", precision="fp32"), full)


def test_training_in_bf16_keeps_float32_weights_and_learns(encoder: Path) -> None:
    """Autocast: the weights and the optimizer's state stay float32; only the matmuls round."""
    model = learner(encoder)
    rows = [{"text": t} for t in ("great", "awful", "great fun", "awful mess")] * 4
    result = train(model, rows, [1, 0, 1, 0] * 4,
                   TrainConfig(learning_rate=3e-3, min_steps=15, device="cpu", precision="bf16"), progress=False)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert np.mean(result.losses[-3:]) < 0.5 * np.mean(result.losses[:3])


def test_precision_is_checked_and_auto_keeps_the_model_keys() -> None:
    """``auto`` was the only behaviour before the setting existed: models trained then keep their keys."""
    assert "precision" not in settings(TrainConfig())
    assert settings(TrainConfig(precision="fp32"))["precision"] == "fp32"
    for config in (TrainConfig, LabelingConfig, AdaptConfig):
        with pytest.raises(ValidationError, match="precision"):
            config(precision="fp16")
