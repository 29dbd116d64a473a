"""Parameter-efficient learners: a ``peft`` adapter on a learner's frozen backbone.

LoRA is injected into the backbone's layers, so the learner's own calls to its encoder go through
it unchanged. The prompt methods change what the encoder is called with, and our learners call
the encoder themselves (the cloze learner gathers the hidden state at the mask, the similarity
learner pools embeddings), so ``encoder_inputs`` does what peft's task models do in ``forward``:
prompt tuning and P-tuning put the virtual tokens' embeddings before the text's (the hidden states
of the text then start ``offset`` positions later), prefix tuning (P-tuning v2) passes each layer's
trained keys and values as its attention cache. Both extend the attention mask over the virtual
tokens. Weights the checkpoint lacked (a fresh classifier or MLM head) are peft's
``modules_to_save``: trained, saved and switched with the adapter.

Several adapters of one backbone live in one ``PeftModel`` under their own names; a learner names
the adapter it reads with, and ``encoder_inputs`` makes it the active one.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Sequence

import torch
from peft import (LoraConfig, PeftConfig, PeftModel, PeftType, PrefixTuningConfig, PromptEncoderConfig,
                  PromptTuningConfig, get_peft_model)
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn
from transformers import AutoConfig, AutoModel

from .backbone import BackboneError, quiet_transformers, resolve
from .settings import PeftSettings

ADAPTER_CONFIG = "adapter_config.json"  # peft's; its presence marks an adapter model directory
TRAINED = "default"  # the adapter of a fresh PeftModel, which save_pretrained writes at the top of a directory
TASK = "FEATURE_EXTRACTION"  # peft's task-neutral model: our learners compute their own outputs
# LoRA targets of the families peft has no default for; the attention projections, as its defaults are
LORA_TARGETS = {"distilbert": ["q_lin", "v_lin"], "albert": ["query", "value"]}


def is_adapter(directory: str | Path) -> bool:
    """Whether ``directory`` holds an adapter (and not a whole model)."""
    return Path(directory, ADAPTER_CONFIG).is_file()


def method(directory: str | Path) -> str:
    """The peft method of a saved adapter (``LORA``, ``PREFIX_TUNING``...): one ``PeftModel`` holds one."""
    return json.loads(Path(directory, ADAPTER_CONFIG).read_text())["peft_type"]


def attach(model: nn.Module, settings: PeftSettings, fresh: Sequence[str], backbone: str) -> PeftModel:
    """``model`` (frozen) with a new trainable adapter, named ``TRAINED``.

    Args:
        model: the learner's transformers model; LoRA layers are injected into it in place.
        settings: the method and its options.
        fresh: modules whose weights the checkpoint lacked; trained and saved with the adapter.
        backbone: the backbone's tokenizer (its local directory), for prompt tuning's ``init_text``.
    """
    problem = check(settings, model.config, type(getattr(model, model.base_model_prefix, model)))
    if problem:
        raise BackboneError(problem)
    config = peft_config(settings, model, backbone)
    config.modules_to_save = list(fresh) or None
    try:
        with quiet_transformers():
            return get_peft_model(model, config)
    except ValueError as err:  # e.g. no default LoRA targets for this family
        raise BackboneError(f"train.peft: cannot add a {settings.method} adapter to a {model.config.model_type!r} "
                            f"model: {str(err).splitlines()[0]}") from None


def peft_config(settings: PeftSettings, model: nn.Module, backbone: str) -> PeftConfig:
    """The ``peft`` configuration of ``settings`` for ``model``'s family."""
    if settings.method == "lora":
        targets = settings.target_modules or LORA_TARGETS.get(model.config.model_type)
        return LoraConfig(task_type=TASK, r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                          target_modules=targets)
    shape = _shape(model, settings)
    if settings.method == "prompt":
        init = ({"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": settings.init_text,
                 "tokenizer_name_or_path": backbone} if settings.init_text else {})
        return PromptTuningConfig(task_type=TASK, num_virtual_tokens=settings.virtual_tokens, **shape, **init)
    if settings.method == "ptuning":
        return PromptEncoderConfig(task_type=TASK, num_virtual_tokens=settings.virtual_tokens,
                                   encoder_hidden_size=settings.encoder_hidden_size or shape["token_dim"], **shape)
    return PrefixTuningConfig(task_type=TASK, num_virtual_tokens=settings.virtual_tokens,
                              prefix_projection=settings.prefix_projection, **shape)


def _shape(model: nn.Module, settings: PeftSettings) -> dict[str, int]:
    """Sizes peft reads from configs it knows; DistilBERT's (``dim``, ``n_layers``) it does not. A
    prompt is input embeddings (ALBERT's are narrower than its hidden states), a prefix keys and values."""
    config = model.config
    hidden = getattr(config, "hidden_size", None) or config.dim
    return {"token_dim": model.get_input_embeddings().embedding_dim if settings.method != "prefix" else hidden,
            "num_layers": getattr(config, "num_hidden_layers", None) or config.n_layers,
            "num_attention_heads": getattr(config, "num_attention_heads", None) or config.n_heads}


def _cache_keyword(model: nn.Module | type) -> str | None:
    """The keyword the encoder (a model or its class) takes its attention cache by (transformers
    renamed it), or None when it takes none."""
    encoder = model if isinstance(model, type) else getattr(model, model.base_model_prefix, model)
    parameters = inspect.signature(encoder.forward).parameters
    return next((k for k in ("cache", "past_key_values") if k in parameters), None)


def check(settings: PeftSettings, config, encoder: type) -> str | None:
    """What adding ``settings``' adapter to a model of ``config`` (its encoder class ``encoder``)
    cannot do, as one line naming the field; None when it can."""
    family = config.model_type
    if settings.method == "lora" and not (settings.target_modules or LORA_TARGETS.get(family)
                                          or TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(family)):
        return f"train.peft.target_modules: no default for a {family!r} model; name its attention projections"
    if settings.method == "prefix" and _cache_keyword(encoder) is None:
        return (f"train.peft.method: prefix needs an encoder that takes each layer's keys and values (the BERT and "
                f"RoBERTa families do); a {family!r} model does not, so use lora, prompt or ptuning")
    return None


def check_backbone(settings: PeftSettings, name_or_path: str, trust_remote_code: bool = False) -> str | None:
    """``check`` for a backbone, read from its config alone (no weights loaded): a run's preflight."""
    with quiet_transformers():
        config = AutoConfig.from_pretrained(resolve(name_or_path), trust_remote_code=trust_remote_code)
    encoder = AutoModel._model_mapping.get(type(config), None)
    return check(settings, config, encoder) if encoder is not None else None


def load(model: nn.Module, directories: Sequence[str | Path], names: Sequence[str]) -> PeftModel:
    """``model`` with the saved adapters of ``directories`` under ``names``, for inference."""
    with quiet_transformers():
        peft_model = PeftModel.from_pretrained(model, str(directories[0]), adapter_name=names[0], is_trainable=False)
        for directory, name in zip(directories[1:], names[1:]):
            peft_model.load_adapter(str(directory), adapter_name=name, is_trainable=False)
    return peft_model


def save(peft_model: PeftModel, name: str, directory: str | Path) -> None:
    """Write adapter ``name`` (and its modules to save) into ``directory``: weights and config only."""
    if name != TRAINED:
        raise ValueError(f"only a trained adapter ({TRAINED!r}) is saved, not {name!r}")
    with quiet_transformers():
        peft_model.save_pretrained(str(directory), selected_adapters=[name], save_embedding_layers=False)
    Path(directory, "README.md").unlink(missing_ok=True)  # peft's model card for the hub, not ours


def encoder_inputs(peft_model: PeftModel | None, name: str | None, model: nn.Module, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor) -> tuple[dict[str, torch.Tensor], int]:
    """The keyword arguments to call ``model`` (or its encoder) with, and the position of the first
    text token in its hidden states: the plain inputs, or adapter ``name``'s prompt with them.

    Args:
        peft_model: the adapters, or None for a learner without one.
        name: the adapter to read with; made the active one.
        model: the transformers model the adapter sits on.
        input_ids, attention_mask: the text's (batch × length).
    """
    plain = {"input_ids": input_ids, "attention_mask": attention_mask}
    if peft_model is None:
        return plain, 0
    if peft_model.active_adapter != name:
        peft_model.set_adapter(name)
    config = peft_model.peft_config[name]
    if not config.is_prompt_learning:
        return plain, 0
    batch = input_ids.shape[0]
    mask = torch.cat([attention_mask.new_ones(batch, config.num_virtual_tokens), attention_mask], dim=1)
    prompt = peft_model.get_prompt(batch)
    if config.peft_type == PeftType.PREFIX_TUNING:
        return {"input_ids": input_ids, "attention_mask": mask, _cache_keyword(model): prompt}, 0
    embeds = model.get_input_embeddings()(input_ids)
    return {"inputs_embeds": torch.cat([prompt.to(embeds.dtype), embeds], dim=1), "attention_mask": mask}, \
        config.num_virtual_tokens
