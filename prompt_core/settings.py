"""The method's settings, validated by pydantic; no torch here, so a config can be read (and an
``ipet ingest`` or ``ipet --help`` start) without importing it."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _known_device(name: str) -> str:
    """Config-time check, so a typo fails validation instead of a task minutes into a run."""
    if name != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    return name


DeviceName = Annotated[str, AfterValidator(_known_device)]
"""A config field naming a device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""


class TrainConfig(BaseModel):
    """Optimisation settings for one model. Defaults follow PET where PET fixed them."""

    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(1e-5, gt=0)
    batch_size: int = Field(4, ge=1)
    grad_accumulation: int = Field(1, ge=1)
    max_steps: int | None = Field(250, ge=1, description="optimizer steps; wins over epochs when set")
    epochs: float = Field(3.0, gt=0)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    temperature: float = Field(2.0, gt=0, description="softens soft targets (distillation)")
    mlm_weight: float = Field(0.0, ge=0, description="auxiliary MLM loss weight; PET uses 1e-4")
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    seed: int = 42
    device: DeviceName = "auto"
    compile: bool = Field(False, description="torch.compile the encoder when training on CUDA (ignored on CPU)")


class AdaptConfig(BaseModel):
    """MLM settings; defaults are TAPT's (15 % masking, 6 % warmup) scaled down to a CPU budget."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(200, ge=1, description="optimizer steps")
    learning_rate: float = Field(1e-4, gt=0)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(128, ge=8, description="texts are truncated to this many tokens")
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    warmup: float = Field(0.06, ge=0, lt=1, description="share of the steps the learning rate warms up over")
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 42
    device: DeviceName = "auto"
