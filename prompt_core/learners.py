"""Learners: a backbone plus the way it turns a row into class logits.

``ClozeLearner`` is PET's PVP model (masked LM + pattern + verbalizer). ``SimilarityLearner`` is
the same idea for a sentence encoder: the rendered input is matched to label phrases by cosine
similarity, so it has a prior before any training. ``ClassifierLearner`` is an ordinary sequence
classifier fed template-rendered text: it has no prior (its head starts random). All share one
training and one labeling loop, and all are saved as a ``save_pretrained`` directory plus
``learner.json``. ``KINDS`` is the table of kinds: a new kind is one class and one entry there.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import torch
from torch import nn
from transformers import AutoModel, AutoModelForSequenceClassification

from . import adapters
from .backbone import (BackboneError, fresh_modules, gather_hidden, has_mlm_head, load_tokenizer, mask_for_mlm,
                       masked_lm, mlm_loss, quiet_transformers, resolve, vocab_scores)
from .device import autocast
from .pattern import Pattern, Template
from .pvp import PVP
from .seeding import seeded_cpu
from .settings import PeftSettings, Precision
from .verbalizer import Verbalizer

SPEC_FILE = "learner.json"
# transformers' loading swaps torch's default device (meta tensors) and is not thread-safe.
_LOADING = threading.Lock()


@dataclass(frozen=True)
class LearnerSpec:
    """Everything needed to rebuild a learner.

    Args:
        kind: a key of ``KINDS`` (``cloze``, ``classifier``, ``similarity``).
        backbone: a hub name or a local path; a path starting with ``../`` is relative to the learner's
            directory (``beside``), as a run records a backbone inside its run directory.
        template: the pattern the input is rendered with.
        labels: class names, in the order of every logit array.
        verbalizer: label → label words (cloze: one token each) or label phrases (similarity).
        max_length: tokens an input is shortened to (its slots, never the pattern's own words).
        trust_remote_code: let transformers run a checkpoint's own code.
        temperature: similarity only: logits are cosine similarities divided by it.
        pooling: similarity only: ``mean``, ``cls`` or ``max``; None reads the checkpoint's own.
    """

    kind: str
    backbone: str
    template: str
    labels: tuple[str, ...]
    verbalizer: dict[str, list[str]] | None = None
    max_length: int = 256
    trust_remote_code: bool = False
    temperature: float | None = None
    pooling: str | None = None

    @classmethod
    def cloze(cls, backbone: str, pvp: PVP, **kw) -> "LearnerSpec":
        """PET's PVP model: the masked LM ``backbone`` scores ``pvp``'s one-token label words at its
        ``{mask}``; ``**kw`` sets the other fields (``max_length``, ...)."""
        return cls("cloze", backbone, pvp.pattern.template, pvp.labels, pvp.words(), **kw)

    @classmethod
    def classifier(cls, backbone: str, template: str, labels: Sequence[str], **kw) -> "LearnerSpec":
        """A sequence classifier: ``backbone`` with a fresh head, one logit per of ``labels``, reading
        rows rendered by ``template``; ``**kw`` sets the other fields."""
        return cls("classifier", backbone, template, tuple(str(l) for l in labels), **kw)

    def to_json(self) -> str:
        """The spec as ``learner.json``'s text (keys sorted: equal specs, equal files)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LearnerSpec":
        """The spec ``to_json`` wrote as ``text``."""
        d = json.loads(text)
        d["labels"] = tuple(d["labels"])
        d.pop("extra", None)  # written by earlier versions, never read
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
    """Rows in, class logits out. Subclasses say how a row becomes token ids and logits, and how
    they are loaded (``load``); ``has_prior`` says whether the untrained learner already scores
    (zero-shot) or starts from a random head.

    With an adapter (``add_adapter``, or a saved adapter loaded by ``load_learners``) ``model`` is
    the frozen backbone, ``peft`` the ``PeftModel`` around it, perhaps shared with other learners of
    the same backbone, and ``adapter`` the name of this learner's adapter in it."""

    has_prior: ClassVar[bool] = True
    template_class: ClassVar[type[Template]] = Template
    distill_kind: ClassVar[str] = "classifier"  # what a run of this kind distills its last ensemble into

    def __init__(self, spec: LearnerSpec, model: nn.Module, tokenizer, fresh: Sequence[str] = ()):
        super().__init__()
        self.spec, self.model, self.tokenizer = spec, model, tokenizer
        self.fresh = tuple(fresh)  # modules whose weights the checkpoint lacked: an adapter trains them too
        self.peft, self.adapter = None, None

    @classmethod
    def missing_prior(cls, backbone: str, *, trust_remote_code: bool = False) -> str | None:
        """Why this kind of learner, untrained on ``backbone``, would score at random (no zero-shot
        stage, and nothing to weigh PVPs by); None where it has a prior."""
        return None if cls.has_prior else "its head starts random"

    @classmethod
    def spec_for(cls, backbone: str, pvp: PVP, *, temperature: float, **kw) -> LearnerSpec:
        """The spec of this kind of learner asking ``pvp``'s question of ``backbone``.

        Args:
            backbone: hub name or local path.
            pvp: the pattern and verbalizer.
            temperature: the similarity learner's; other kinds ignore it.
            **kw: ``max_length``, ``trust_remote_code``.
        """
        raise NotImplementedError

    @classmethod
    def load(cls, spec: LearnerSpec, source: str, tokenizer) -> "Learner":
        """The learner of ``spec`` with weights from ``source`` (a saved learner or the backbone) and
        ``tokenizer`` (the source's)."""
        raise NotImplementedError

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(rows × labels) class logits of a batch ``collate`` made."""
        raise NotImplementedError

    @property
    def labels(self) -> tuple[str, ...]:
        """The class names, in the order of every logit column."""
        return self.spec.labels

    @property
    def template(self) -> Template:
        """The spec's template (a ``Pattern`` for a cloze learner), which renders and encodes rows."""
        return self.template_class(self.spec.template)

    def featurize(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Each of ``rows`` (field → text) as features for ``collate``: its token ids, at most ``max_length``."""
        return [{"input_ids": ids} for ids in self.template.encode(self.tokenizer, rows, self.spec.max_length)]

    def collate(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """``featurize``'s ``features`` as one batch: ``input_ids`` and ``attention_mask`` padded to the
        longest row, any other feature as a tensor."""
        ids, attention = pad_batch([f["input_ids"] for f in features], self.tokenizer.pad_token_id)
        batch = {"input_ids": ids, "attention_mask": attention}
        for key in features[0].keys() - {"input_ids"}:
            batch[key] = torch.tensor([f[key] for f in features])
        return batch

    @contextlib.contextmanager
    def scoring(self, precision: Precision = "auto") -> Iterator[None]:
        """Around a labeling pass with fixed weights, computing in ``precision`` (``device.autocast``):
        a learner may compute once what every batch shares (the similarity learner's label embeddings)."""
        yield

    def mlm_loss(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator, probability: float = 0.15):
        """The masked-LM loss on ``batch``'s texts with ``probability`` of their tokens masked, drawn by
        ``generator`` (PET's auxiliary loss). Only a cloze learner has one; others raise BackboneError."""
        raise BackboneError(f"an auxiliary MLM loss needs a cloze learner, not {self.spec.kind!r}")

    def add_adapter(self, settings: PeftSettings) -> None:
        """Freeze the backbone and train a new adapter (and the fresh modules) instead.

        Args:
            settings: the method and its options (``train.peft``).
        """
        self.peft = adapters.attach(self.model, settings, self.fresh, self.tokenizer.name_or_path)
        self.adapter = adapters.TRAINED

    def encoder_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[dict, int]:
        """``input_ids`` and ``attention_mask`` as keyword arguments for ``model``, and the first text
        position in its hidden states: as they are, or with this learner's adapter's prompt
        (``adapters.encoder_inputs``)."""
        return adapters.encoder_inputs(self.peft, self.adapter, self.model, input_ids, attention_mask)

    def save(self, directory: str | Path, spec: LearnerSpec | None = None) -> None:
        """Write the learner into ``directory``: ``learner.json`` and the weights (``save_pretrained``
        and the tokenizer), or with an adapter only the adapter, its backbone named in the spec.
        ``spec`` is what ``learner.json`` records, if not this learner's own: the same, its backbone named
        as the caller keeps it (a run names one inside its run directory relative to the model's)."""
        directory = Path(directory)
        if self.peft is not None:
            adapters.save(self.peft, self.adapter, directory)
        else:
            with quiet_transformers():
                self.model.save_pretrained(directory)
                self.tokenizer.save_pretrained(directory)
        (directory / SPEC_FILE).write_text((spec or self.spec).to_json())


class ClozeLearner(Learner):
    """PET's PVP model: a masked LM fills the pattern's ``{mask}``; a class's logit is the mean score
    of its label words there (scored at the mask only, on those words only)."""

    template_class = Pattern

    def __init__(self, spec: LearnerSpec, model: nn.Module, tokenizer, fresh: Sequence[str] = ()):
        super().__init__(spec, model, tokenizer, fresh)
        word_ids, averaging = self.pvp.verbalizer.averaging_matrix(tokenizer)
        self.register_buffer("word_ids", word_ids, persistent=False)
        self.register_buffer("averaging", averaging, persistent=False)

    @classmethod
    def spec_for(cls, backbone, pvp, *, temperature, **kw):
        return LearnerSpec.cloze(backbone, pvp, **kw)

    @classmethod
    def missing_prior(cls, backbone, *, trust_remote_code=False):
        if has_mlm_head(backbone, trust_remote_code=trust_remote_code):
            return None
        return f"{backbone} has no pretrained MLM head, so the cloze learner's head starts random"

    @classmethod
    def load(cls, spec, source, tokenizer):
        if tokenizer.mask_token is None:
            raise BackboneError(f"{spec.backbone!r} has no mask token, so it cannot fill a cloze pattern")
        model, fresh = masked_lm(source, trust_remote_code=spec.trust_remote_code)
        return cls(spec, model, tokenizer, fresh)

    @property
    def pvp(self) -> PVP:
        """The pattern and verbalizer the spec holds, the verbalizer in the spec's label order."""
        return PVP(Pattern(self.spec.template), ordered_verbalizer(self.spec))

    def featurize(self, rows):
        features = super().featurize(rows)
        mask_id = self.tokenizer.mask_token_id
        for f in features:
            f["mask_pos"] = f["input_ids"].index(mask_id)
        return features

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        rows = torch.arange(batch["input_ids"].shape[0], device=batch["input_ids"].device)
        inputs, offset = self.encoder_inputs(batch["input_ids"], batch["attention_mask"])
        hidden = gather_hidden(self.model, inputs, rows, batch["mask_pos"] + offset)
        word_scores = vocab_scores(self.model, hidden, self.word_ids)
        return word_scores.float() @ self.averaging.T

    def mlm_loss(self, batch, generator, probability=0.15):
        inputs, labels = mask_for_mlm(batch["input_ids"].cpu(), batch["attention_mask"].cpu(),
                                      self.tokenizer, probability, generator)
        device = batch["input_ids"].device
        return mlm_loss(self.model, inputs.to(device), batch["attention_mask"], labels.to(device))


class SimilarityLearner(Learner):
    """A sentence encoder as a PVP: a class's logit is the mean cosine similarity between the
    rendered input's embedding and the label's phrase embeddings, divided by the temperature.

    One encoder embeds both sides and is trained end to end, so training moves texts towards their
    label's phrases; untrained, it is the encoder's own zero-shot prior.
    """

    distill_kind = "similarity"  # keeps the prior's form

    def __init__(self, spec: LearnerSpec, model: nn.Module, tokenizer, fresh: Sequence[str] = ()):
        super().__init__(spec, model, tokenizer, fresh)
        verbalizer = ordered_verbalizer(spec)
        ids, attention = pad_batch(tokenizer([p for ps in verbalizer.words.values() for p in ps])["input_ids"],
                                   tokenizer.pad_token_id)
        self.register_buffer("phrase_ids", ids, persistent=False)
        self.register_buffer("phrase_attention", attention, persistent=False)
        self.register_buffer("averaging", verbalizer.averaging([len(ps) for ps in verbalizer.words.values()]),
                             persistent=False)
        self._fixed: torch.Tensor | None = None

    @classmethod
    def spec_for(cls, backbone, pvp, *, temperature, **kw):
        return LearnerSpec("similarity", backbone, pvp.pattern.template, pvp.labels, pvp.words(),
                           temperature=temperature, **kw)

    @classmethod
    def load(cls, spec, source, tokenizer):
        try:
            with quiet_transformers():
                model = AutoModel.from_pretrained(resolve(source), trust_remote_code=spec.trust_remote_code,
                                                  use_safetensors=True)
        except (OSError, ValueError, KeyError) as err:
            raise BackboneError(f"cannot load a sentence encoder from {source!r}: {err}") from None
        return cls(replace(spec, pooling=spec.pooling or checkpoint_pooling(source)), model, tokenizer)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit-length pooled embeddings of a batch (``input_ids``, ``attention_mask``), of the text's
        tokens only, never an adapter's virtual ones."""
        inputs, offset = self.encoder_inputs(input_ids, attention_mask)
        hidden = self.model(**inputs).last_hidden_state[:, offset:]
        return nn.functional.normalize(pool(hidden.float(), attention_mask, self.spec.pooling), dim=-1)

    def label_embeddings(self) -> torch.Tensor:
        """(labels × hidden): each label's mean phrase embedding; its dot product with a unit input
        embedding is the mean of the input's cosine similarities to the label's phrases."""
        if self._fixed is not None:
            return self._fixed
        return self.averaging @ self.embed(self.phrase_ids, self.phrase_attention)

    @contextlib.contextmanager
    def scoring(self, precision="auto"):
        with torch.inference_mode(), autocast(self.phrase_ids.device, precision):
            self._fixed = self.label_embeddings()  # once per labeling pass, not once per batch
        try:
            yield
        finally:
            self._fixed = None

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        texts, labels = self.embed(batch["input_ids"], batch["attention_mask"]), self.label_embeddings()
        with torch.autocast(texts.device.type, enabled=False):  # cosines ÷ 0.05 need more than bf16's 3 digits
            return texts.float() @ labels.float().T / self.spec.temperature


class ClassifierLearner(Learner):
    """A sequence classifier (a fresh head on the backbone) reading the rendered template: no prior,
    so it needs labeled examples."""

    has_prior = False

    @classmethod
    def spec_for(cls, backbone, pvp, *, temperature, **kw):
        return LearnerSpec.classifier(backbone, pvp.pattern.template, pvp.labels, **kw)

    @classmethod
    def load(cls, spec, source, tokenizer):
        try:
            with quiet_transformers():
                model, info = AutoModelForSequenceClassification.from_pretrained(
                    resolve(source), num_labels=len(spec.labels), trust_remote_code=spec.trust_remote_code,
                    use_safetensors=True, output_loading_info=True)
        except (OSError, ValueError, KeyError) as err:
            raise BackboneError(f"cannot load a sequence classifier from {source!r}: {err}") from None
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return cls(spec, model, tokenizer, fresh_modules(model, info["missing_keys"]))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        inputs, _ = self.encoder_inputs(batch["input_ids"], batch["attention_mask"])
        return self.model(**inputs).logits.float()


KINDS: dict[str, type[Learner]] = {"cloze": ClozeLearner, "similarity": SimilarityLearner,
                                   "classifier": ClassifierLearner}
"""Every learner kind: a config's ``learner`` and a spec's ``kind`` name one of them."""


def ordered_verbalizer(spec: LearnerSpec) -> Verbalizer:
    """The spec's verbalizer with its labels in class order (``learner.json`` sorts its keys)."""
    return Verbalizer({label: spec.verbalizer[label] for label in spec.labels})


POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                 "pooling_mode_max_tokens": "max"}


def checkpoint_pooling(source: str) -> str:
    """The pooling a sentence-transformers checkpoint was trained with (its ``modules.json`` and
    pooling config); ``mean`` for any other checkpoint, the usual choice for an encoder."""
    path = Path(resolve(source))
    try:
        modules = json.loads((path / "modules.json").read_text())
        folder = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
        config = json.loads((path / folder / "config.json").read_text())
    except (OSError, ValueError, StopIteration, KeyError):
        return "mean"
    return next((mode for key, mode in POOLING_MODES.items() if config.get(key)), "mean")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """(batch × length × hidden) → (batch × hidden), over the tokens the attention mask keeps."""
    if mode == "cls":
        return hidden[:, 0]
    keep = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(keep == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    return (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1e-9)


def learner_class(kind: str) -> type[Learner]:
    """The class of learner ``kind`` (a key of ``KINDS``); BackboneError for an unknown kind."""
    if kind not in KINDS:
        raise BackboneError(f"unknown learner {kind!r}; use one of {', '.join(KINDS)}")
    return KINDS[kind]


def build_learner(spec: LearnerSpec, weights: str | Path | None = None) -> Learner:
    """A learner from its spec, with weights from ``weights`` (a saved directory) or the backbone.

    Weights the checkpoint lacks (a fresh MLM or classifier head) are initialised from a fixed
    seed, so an untrained learner scores the same in every process and every run.

    Args:
        spec: the learner's kind, backbone, template and labels.
        weights: a saved learner directory; None loads the backbone's own weights.

    Returns:
        The learner of ``spec.kind``, on the CPU.
    """
    with seeded_loading(0):
        source = str(weights) if weights is not None else spec.backbone
        tokenizer = load_tokenizer(source, trust_remote_code=spec.trust_remote_code)
        return learner_class(spec.kind).load(spec, source, tokenizer)


@contextlib.contextmanager
def seeded_loading(seed: int) -> Iterator[None]:
    """Load under one lock (transformers' loading is not thread-safe) with torch's CPU generator
    seeded and no other thread drawing from it (``seeding.seeded_cpu``), so weights a checkpoint
    lacks come out the same every time; the generator is left as it was."""
    with seeded_cpu(seed), _LOADING:
        yield


def save_spec(spec: LearnerSpec, directory: str | Path) -> None:
    """Save an untrained learner: ``spec`` alone as ``learner.json`` in ``directory`` (an existing
    folder); its weights come from the backbone when loaded (zero-shot)."""
    Path(directory, SPEC_FILE).write_text(spec.to_json())


def beside(directory: str | Path, backbone: str) -> str:
    """The backbone a learner saved in ``directory`` names: one written relative to that directory
    (``../../backbones/…``, a backbone in the same run directory, which can then be copied or moved
    whole) as its path when it is there; any other as is (a hub name, a local path). BackboneError for
    a path (relative to it, or absolute) that is not there: transformers would take it for a hub name."""
    if backbone.startswith("../") and Path(directory, backbone).is_dir():
        return str(Path(directory, backbone).resolve())
    if (backbone.startswith("../") or Path(backbone).is_absolute()) and not Path(backbone).exists():
        raise BackboneError(f"{directory}: its backbone {backbone} is not there, and the model has no weights of its "
                            "own without it (an adapted backbone is kept in the run directory: copy or move that whole)")
    return backbone


def load_learner(directory: str | Path, fetch: Callable[[str], str] = str) -> Learner:
    """The learner saved in ``directory`` (``Learner.save``, or ``save_spec`` for an untrained one).

    Args:
        directory: a learner directory.
        fetch: turns a backbone named by an untrained or adapter learner into something loadable:
            the caller's local copy of a backbone only it knows how to reach (one at a URL, one
            bundled with a registered model), else the name as is; one still relative to the
            learner's directory after it is read from there (``beside``).

    Returns:
        The learner, with its saved weights, or the backbone's (and its saved adapter).
    """
    return load_learners([directory], fetch)[0]


def load_learners(directories: Sequence[str | Path], fetch: Callable[[str], str] = str) -> list[Learner]:
    """The learners saved in ``directories``, in order, as ``load_learner`` loads each (``fetch`` as
    there); but adapter learners of one backbone share it: it is loaded once, with every adapter
    (peft's multi-adapter model; one per method), and each learner switches to its own adapter when it
    runs. Use them one at a time."""
    specs = [LearnerSpec.from_json(Path(d, SPEC_FILE).read_text()) for d in directories]
    shared: dict[tuple, list[int]] = {}
    learners: list[Learner | None] = [None] * len(specs)
    for i, (spec, directory) in enumerate(zip(specs, map(Path, directories))):
        if any(directory.glob("*.safetensors")) and not adapters.is_adapter(directory):
            learners[i] = build_learner(spec, directory)
            continue
        source = beside(directory, fetch(spec.backbone))
        if adapters.is_adapter(directory):
            key = (spec.kind, source, len(spec.labels), spec.trust_remote_code, adapters.method(directory))
            shared.setdefault(key, []).append(i)
        else:
            learners[i] = build_learner(spec, source)
    for (_, source, *_), members in shared.items():
        for i, learner in zip(members, _on_one_backbone([specs[i] for i in members],
                                                        [directories[i] for i in members], source)):
            learners[i] = learner
    return learners


def _on_one_backbone(specs: Sequence[LearnerSpec], directories: Sequence[str | Path], source: str) -> list[Learner]:
    """Adapter learners of one backbone (and kind), read from ``source``: the backbone loaded once, an
    adapter per learner."""
    first = build_learner(specs[0], source)
    names = [f"adapter{i}" for i in range(len(specs))]
    with seeded_loading(0):
        peft = adapters.load(first.model, directories, names)
    learners = [first] + [type(first)(spec, first.model, first.tokenizer, first.fresh) for spec in specs[1:]]
    for learner, name in zip(learners, names):
        learner.peft, learner.adapter = peft, name
    return learners
