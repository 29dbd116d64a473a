"""The method's settings, validated by pydantic; no torch here, so a config can be read (and an
``ipet ingest`` or ``ipet --help`` start) without importing it."""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

LearnerKind = Literal["cloze", "similarity", "classifier"]
"""The learner kinds (``prompt_core.learners.KINDS`` has their classes), named here without torch."""


def known_device(name: str) -> str:
    """``name`` if it names a device (``auto``, ``cpu``, ``cuda`` or ``cuda:N``), else ValueError.

    Checked when a config is read, so a typo fails validation instead of a task minutes into a run,
    and again by ``select_device`` for a device given in code or on the command line."""
    if name != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    return name


DeviceName = Annotated[str, AfterValidator(known_device)]
"""A config field naming a device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""


Precision = Literal["auto", "bf16", "fp32"]
"""Compute precision of training and labeling: bf16 autocast, or float32 throughout. ``auto``: bf16 where
the chip multiplies bf16 natively (CUDA; a CPU with AMX, such as Xeons since Sapphire Rapids, or with AVX-512
BF16, such as AMD EPYC since Zen 4), where it labels about twice as fast; float32 elsewhere, where bf16 is
emulated and slower."""

PRECISION_HELP = ("auto: bf16 on CUDA and on CPUs with AMX or AVX-512 BF16, else fp32; fp32 reproduces a CPU run "
                  "of any machine")

PeftMethod = Literal["lora", "prompt", "ptuning", "prefix"]
MLM_PROBABILITY = ("share of tokens masked for the MLM loss; at least 0.01: below it most batches mask nothing, "
                   "and the draw is repeated until one does (a hang at 1e-9)")


class PeftSettings(BaseModel):
    """A parameter-efficient learner (``train.peft``): the backbone stays frozen and shared, and only a
    small adapter (plus any head the checkpoint lacks) is trained and saved, by the ``peft`` library.

    ``lora``: low-rank updates of the attention projections (``rank``, ``alpha``, ``dropout``,
    ``target_modules``). ``prompt``: prompt tuning, ``virtual_tokens`` trained input embeddings
    before the text (``init_text`` starts them from a phrase's embeddings). ``ptuning``: P-tuning, the
    virtual tokens produced by a small prompt encoder (``encoder_hidden_size``). ``prefix``: P-tuning
    v2 / prefix tuning, trained keys and values at every layer (``prefix_projection``: through an MLP).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: PeftMethod = Field(description="lora, prompt (prompt tuning), ptuning (P-tuning) or prefix "
                                           "(P-tuning v2 / prefix tuning)")
    learning_rate: float | None = Field(None, gt=0, description="the adapter's learning rate; null: the method's "
                                                                "usual one (lora 5e-4, the others 1e-2)")
    rank: int = Field(8, ge=1, description="lora: rank of the update")
    alpha: float = Field(16.0, gt=0, description="lora: the update is scaled by alpha / rank")
    dropout: float = Field(0.1, ge=0, lt=1, description="lora: dropout on the update's input")
    target_modules: list[str] | None = Field(None, min_length=1, description="lora: modules adapted; null: the "
                                                                              "model family's attention projections")
    virtual_tokens: int = Field(20, ge=1, description="prompt, ptuning, prefix: trained tokens")
    init_text: str | None = Field(None, min_length=1, description="prompt: start the virtual tokens from this "
                                                                  "text's embeddings (else random)")
    encoder_hidden_size: int | None = Field(None, ge=1, description="ptuning: the prompt encoder's hidden size; "
                                                                    "null: the model's")
    prefix_projection: bool = Field(False, description="prefix: produce the prefix through a two-layer MLP")

    @model_validator(mode="after")
    def _options_of_the_method(self) -> "PeftSettings":
        """An option of another method, set to other than its default, would be silently ignored: refuse it."""
        foreign = [f"{f} is an option of {' and '.join(methods)}, not of method {self.method!r}"
                   for f, methods in _OPTION_METHODS.items()
                   if self.method not in methods and getattr(self, f) != type(self).model_fields[f].default]
        if foreign:
            raise ValueError("; ".join(foreign))
        return self

    @property
    def rate(self) -> float:
        """The learning rate the adapter trains with."""
        return self.learning_rate or (5e-4 if self.method == "lora" else 1e-2)


_OPTION_METHODS = {"rank": ("lora",), "alpha": ("lora",), "dropout": ("lora",), "target_modules": ("lora",),
                   "virtual_tokens": ("prompt", "ptuning", "prefix"), "init_text": ("prompt",),
                   "encoder_hidden_size": ("ptuning",), "prefix_projection": ("prefix",)}


class TrainConfig(BaseModel):
    """Optimisation settings for one model.

    The defaults are the settings bench/accuracy.py measures, so a config without a ``train:``
    section gets numbers that were benchmarked. A model trains for ``epochs`` passes over its
    training set, but at least ``min_steps`` optimizer steps (a gold set of 40 is 5 batches) and at
    most ``max_steps`` when set: steps grow with iPET's training sets instead of staying fixed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    learning_rate: float = Field(2e-5, gt=0)
    batch_size: int = Field(8, ge=1)
    grad_accumulation: int = Field(1, ge=1)
    epochs: float = Field(1.0, gt=0, description="passes over the training set")
    min_steps: int = Field(60, ge=1, description="optimizer steps at least, however small the set")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps at most (wins over min_steps)")
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    temperature: float = Field(2.0, gt=0, description="softens soft targets (distillation)")
    mlm_weight: float = Field(0.0, ge=0, description="auxiliary MLM loss weight; PET uses 1e-4")
    prior_weight: float | None = Field(None, gt=0, description=(
        "keep the prior (learning without forgetting): each step adds this weight times the KL divergence "
        "from the untrained model's class probabilities to the model's on a batch of pool rows, so a few "
        "labels the prior cannot read do not pull the model below it; null: off"))
    mlm_probability: float = Field(0.15, ge=0.01, lt=1, description=MLM_PROBABILITY)
    seed: int = 42
    device: DeviceName = "auto"
    precision: Precision = Field("auto", description=PRECISION_HELP)
    compile: bool = Field(False, description="torch.compile the encoder when training on CUDA (ignored on CPU)")
    group_by_length: bool = Field(False, description=(
        "draw each batch from rows of about the same token length (transformers' length-grouped order: "
        "shuffled groups of 50 batches, each sorted by length), so less padding is computed; off by default, "
        "since which rows share a batch changes every trained model and so every number of record"))
    peft: PeftSettings | None = Field(None, description="train an adapter on the frozen backbone instead of "
                                                        "the whole model; off (null) by default")

    @property
    def rate(self) -> float:
        """The learning rate of the optimizer: the adapter's with ``peft``, else ``learning_rate``."""
        return self.peft.rate if self.peft else self.learning_rate

    @property
    def uses_unlabeled(self) -> bool:
        """Whether training reads unlabeled rows: for the auxiliary MLM loss or to keep the prior."""
        return self.mlm_weight > 0 or self.prior_weight is not None

    def steps(self, rows: int) -> int:
        """Optimizer steps for a training set of ``rows`` rows."""
        passes = math.ceil(self.epochs * rows / (self.batch_size * self.grad_accumulation))
        return min(max(self.min_steps, passes), self.max_steps or math.inf)


class AdaptConfig(BaseModel):
    """MLM settings; defaults are TAPT's (15 % masking, 6 % warmup) scaled down to a CPU budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(200, ge=1, description="optimizer steps")
    learning_rate: float = Field(1e-4, gt=0)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(128, ge=8, description="texts are truncated to this many tokens")
    mlm_probability: float = Field(0.15, ge=0.01, lt=1, description=MLM_PROBABILITY)
    warmup: float = Field(0.06, ge=0, lt=1, description="share of the steps the learning rate warms up over")
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 42
    device: DeviceName = Field("auto", description="ipet adapt's device; ipet run adapts where it trains "
                                                   "(train.device), on Ray too")
    precision: Precision = Field("auto", description=PRECISION_HELP)


class LabelingConfig(BaseModel):
    """How models label a set: rows per batch, and rows per labeling task (a big pool is labeled in shards)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        64, description='"auto": as many rows as fit in free GPU memory (64 on CPU)')
    shard_rows: int | None = Field(100_000, ge=1, description="a set with more rows is labeled as one task per "
                                                              "shard of this many rows; null: never shard")
    precision: Precision = Field("auto", description=PRECISION_HELP)


class IpetConfig(BaseModel):
    """How iPET grows its training sets (PET's ``generate_ipet_train_set``), with two departures
    measured in bench/RESULTS.md: the new examples follow the pool's estimated class distribution
    (``balance: pool``), and every other model labels (``peer_fraction`` 1; PET's 0.25 was for 15
    models, with 3 it leaves one peer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generations: int = Field(2, ge=0, description="iPET generations after PET")
    growth: float = Field(3.0, gt=1, description="d: generation g trains on base·d^g examples")
    peer_fraction: float = Field(1.0, gt=0, le=1, description="share of the other models that label")
    reduction: Literal["wmean", "mean"] = "wmean"
    selection: Literal["sample", "top"] = "sample"
    balance: Literal["pool", "gold"] = Field("pool", description="split new examples over classes like the "
                                                                 "pool's estimated distribution, or like the gold set")
    n_most_likely: int | None = Field(None, ge=1)
    min_confidence: float | None = Field(None, ge=0, le=1)
    soft_labels: bool = Field(False, description="train on the peers' logits instead of hard labels")
    zero_shot_per_class: int = Field(50, ge=1, description="base size per class when there are no labels")
