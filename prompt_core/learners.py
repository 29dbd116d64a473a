"""Learners: a backbone plus the way it turns a row into class logits.

``ClozeLearner`` is PET's PVP model (masked LM + pattern + verbalizer). ``ClassifierLearner``
is an ordinary sequence classifier fed template-rendered text: the distillation target, and
an iPET learner for backbones whose MLM prior is weak. Both share one training and one
labeling loop, and both are saved as a ``save_pretrained`` directory plus ``learner.json``.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from .backbone import (BackboneError, quiet_transformers, gather_hidden, load_masked_lm, load_tokenizer,
                       mask_for_mlm, mlm_loss, resolve, vocab_scores)
from .pattern import Pattern, Template
from .pvp import PVP
from .verbalizer import Verbalizer

SPEC_FILE = "learner.json"
# transformers' loading swaps torch's default device (meta tensors) and is not thread-safe.
_LOADING = threading.Lock()


@dataclass(frozen=True)
class LearnerSpec:
    """Everything needed to rebuild a learner; ``backbone`` is a hub name or a local path."""

    kind: Literal["cloze", "classifier"]
    backbone: str
    template: str
    labels: tuple[str, ...]
    verbalizer: dict[str, list[str]] | None = None
    max_length: int = 256
    trust_remote_code: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def cloze(cls, backbone: str, pvp: PVP, **kw) -> "LearnerSpec":
        d = pvp.to_dict()
        return cls("cloze", backbone, d["pattern"], pvp.labels, d["verbalizer"], **kw)

    @classmethod
    def classifier(cls, backbone: str, template: str, labels: Sequence[str], **kw) -> "LearnerSpec":
        return cls("classifier", backbone, template, tuple(str(l) for l in labels), **kw)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LearnerSpec":
        d = json.loads(text)
        d["labels"] = tuple(d["labels"])
        return cls(**d)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded to the batch's longest sequence (not to max_length), and the attention mask."""
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        attention[i, : len(s)] = 1
    return ids, attention


class Learner(nn.Module):
    """Rows in, class logits out. Subclasses say how a row becomes token ids and logits."""

    def __init__(self, spec: LearnerSpec, model: nn.Module, tokenizer):
        super().__init__()
        self.spec, self.model, self.tokenizer = spec, model, tokenizer

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    @property
    def template(self) -> Template:
        return Template(self.spec.template)

    def featurize(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [{"input_ids": ids} for ids in self.template.encode(self.tokenizer, rows, self.spec.max_length)]

    def collate(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        ids, attention = pad_batch([f["input_ids"] for f in features], self.tokenizer.pad_token_id)
        batch = {"input_ids": ids, "attention_mask": attention}
        for key in features[0].keys() - {"input_ids"}:
            batch[key] = torch.tensor([f[key] for f in features])
        return batch

    def mlm_loss(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator, probability: float = 0.15):
        raise BackboneError(f"an auxiliary MLM loss needs a cloze learner, not {self.spec.kind!r}")

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        with quiet_transformers():
            self.model.save_pretrained(directory)
            self.tokenizer.save_pretrained(directory)
        (directory / SPEC_FILE).write_text(self.spec.to_json())


class ClozeLearner(Learner):
    def __init__(self, spec: LearnerSpec, model: nn.Module, tokenizer):
        super().__init__(spec, model, tokenizer)
        word_ids, averaging = self.pvp.verbalizer.averaging_matrix(tokenizer)
        self.register_buffer("word_ids", word_ids, persistent=False)
        self.register_buffer("averaging", averaging, persistent=False)

    @property
    def pvp(self) -> PVP:
        # class index order is spec.labels; the verbalizer mapping may list labels in another
        # order (learner.json is written with sorted keys), so it is reordered to match
        words = self.spec.verbalizer
        return PVP(Pattern(self.spec.template), Verbalizer({label: words[label] for label in self.spec.labels}))

    @property
    def template(self) -> Pattern:
        return Pattern(self.spec.template)

    def featurize(self, rows):
        features = super().featurize(rows)
        mask_id = self.tokenizer.mask_token_id
        for f in features:
            f["mask_pos"] = f["input_ids"].index(mask_id)
        return features

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        rows = torch.arange(batch["input_ids"].shape[0], device=batch["input_ids"].device)
        hidden = gather_hidden(self.model, batch["input_ids"], batch["attention_mask"], rows, batch["mask_pos"])
        word_scores = vocab_scores(self.model, hidden, self.word_ids)
        return word_scores.float() @ self.averaging.T

    def mlm_loss(self, batch, generator, probability=0.15):
        inputs, labels = mask_for_mlm(batch["input_ids"].cpu(), batch["attention_mask"].cpu(),
                                      self.tokenizer, probability, generator)
        device = batch["input_ids"].device
        return mlm_loss(self.model, inputs.to(device), batch["attention_mask"], labels.to(device))


class ClassifierLearner(Learner):
    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()


def build_learner(spec: LearnerSpec, weights: str | Path | None = None) -> Learner:
    """A learner from its spec, with weights from ``weights`` (a saved directory) or the backbone.

    Weights the checkpoint lacks (a fresh MLM or classifier head) are initialised from a fixed
    seed, so an untrained learner scores the same in every process and every run.
    """
    with seeded_loading(0):
        return _build(spec, weights)


@contextlib.contextmanager
def seeded_loading(seed: int) -> Iterator[None]:
    """Load under one lock (transformers' loading is not thread-safe) with torch's RNG seeded, so
    weights a checkpoint lacks come out the same every time; the global RNG is left as it was."""
    with _LOADING, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _build(spec: LearnerSpec, weights: str | Path | None) -> Learner:
    source = str(weights) if weights is not None else spec.backbone
    tokenizer = load_tokenizer(source, trust_remote_code=spec.trust_remote_code)
    if spec.kind == "cloze":
        if tokenizer.mask_token is None:
            raise BackboneError(f"{spec.backbone!r} has no mask token, so it cannot fill a cloze pattern")
        return ClozeLearner(spec, load_masked_lm(source, trust_remote_code=spec.trust_remote_code), tokenizer)
    try:
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(
                resolve(source), num_labels=len(spec.labels), trust_remote_code=spec.trust_remote_code,
                use_safetensors=True)
    except (OSError, ValueError, KeyError) as err:
        raise BackboneError(f"cannot load a sequence classifier from {source!r}: {err}") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return ClassifierLearner(spec, model, tokenizer)


def save_spec(spec: LearnerSpec, directory: str | Path) -> None:
    """An untrained learner: the spec alone, weights come from the backbone (zero-shot)."""
    Path(directory, SPEC_FILE).write_text(spec.to_json())


def load_learner(directory: str | Path, fetch: Callable[[str], str] = str) -> Learner:
    """``fetch`` turns an untrained learner's backbone into something loadable: the caller's local
    copy of a backbone only it knows how to reach (one at a URL), else the name as is."""
    directory = Path(directory)
    spec = LearnerSpec.from_json((directory / SPEC_FILE).read_text())
    has_weights = any(directory.glob("*.safetensors"))
    return build_learner(spec, directory if has_weights else fetch(spec.backbone))
