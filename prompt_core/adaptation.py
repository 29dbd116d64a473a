"""Task-adaptive pretraining (TAPT): more masked-LM training of a backbone on the task's own text.

A few hundred MLM steps on the unlabeled pool move an encoder towards the task's domain
(Gururangan et al., 2020), and PET scores with the MLM head, so that head has to know the
domain's words too. A checkpoint without an MLM head (a sentence encoder) gets a fresh one tied
to the word embeddings, and this is where it is trained. The output is an ordinary
``save_pretrained`` directory, usable wherever a backbone name is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import torch

from .backbone import BackboneError, load_masked_lm, load_tokenizer, mask_for_mlm, mlm_loss, quiet_transformers
from .checkpoints import Checkpoints
from .device import autocast, select_device
from .learners import pad_batch, seeded_loading
from .seeding import seeded_training
from .settings import AdaptConfig
from .training import TrainResult, index_batches, optimize


def adapt(backbone: str, texts: Iterable[str], config: AdaptConfig, out_dir: str | Path, *,
          trust_remote_code: bool = False, on_log: Callable[[int, float], None] | None = None,
          progress: bool = True, checkpoints: Checkpoints | None = None) -> TrainResult:
    """Continue masked-LM training of ``backbone`` on ``texts``; save model and tokenizer to ``out_dir``.

    The loss is computed at the masked positions only (``mlm_loss``): projecting every position
    onto the whole vocabulary is what makes MLM training slow.

    Args:
        backbone: hub name or local path of a checkpoint with a mask token.
        texts: the text to train on (the pool's input fields joined).
        config: steps, learning rate, masking and the device.
        out_dir: where the adapted backbone is saved (``save_pretrained``).
        trust_remote_code: let transformers run the checkpoint's own code.
        on_log: called with (step, loss) after every step.
        progress: show a progress bar.
        checkpoints: save the training's state now and then, and go on from ``checkpoints.resume``
            (a killed adaptation's last one): the result is the same as without the interruption.

    Returns:
        The steps taken and the MLM loss of each.
    """
    tokenizer = load_tokenizer(backbone, trust_remote_code=trust_remote_code)
    if tokenizer.mask_token is None:
        raise BackboneError(f"{backbone!r} has no mask token, so it cannot be trained as a masked LM")
    sequences = _maskable(tokenizer, texts, config.max_length)
    device = select_device(config.device)
    with seeded_loading(config.seed):
        model = load_masked_lm(backbone, trust_remote_code=trust_remote_code)
    model.to(device).train()
    generator = torch.Generator().manual_seed(config.seed)
    batches = index_batches(len(sequences), config.batch_size, generator)

    def draw() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next step's batch and its masks: inputs, attention mask, labels."""
        ids, attention = pad_batch([sequences[i] for i in next(batches)], tokenizer.pad_token_id)
        inputs, labels = _mask_some(ids, attention, tokenizer, config.mlm_probability, generator)
        return inputs, attention, labels

    def step_loss() -> float:
        inputs, attention, labels = draw()
        with autocast(device, config.precision):
            loss = mlm_loss(model, inputs.to(device), attention.to(device), labels.to(device))
        loss.backward()
        return loss.item()

    for _ in range(checkpoints.step if checkpoints else 0):  # the steps a checkpoint holds drew these batches
        draw()  # and masks: drawn again, so the next step draws what it would have without the interruption
    with seeded_training(config.seed, device) as set_up:  # dropout's masks, whatever other threads do
        set_up()
        result = optimize(model, config.steps, step_loss, learning_rate=config.learning_rate,
                          weight_decay=config.weight_decay, warmup_steps=round(config.warmup * config.steps),
                          max_grad_norm=config.max_grad_norm, desc="adapt", on_log=on_log, progress=progress,
                          checkpoints=checkpoints)
    model.eval()
    with quiet_transformers():
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return result


def _maskable(tokenizer, texts: Iterable[str], max_length: int) -> list[list[int]]:
    """Token ids of the texts that have at least one non-special token to mask."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    kept = [ids for ids in encoded
            if not all(tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True))]
    if not kept:
        raise ValueError(f"nothing to adapt on: none of the {len(encoded)} texts has a token to mask")
    return kept


def _mask_some(ids: torch.Tensor, attention: torch.Tensor, tokenizer, probability: float,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``mask_for_mlm``, drawn again while nothing is masked: such a batch has no loss to step on.

    Every sequence has a maskable token (``_maskable``), so a redraw eventually masks one.
    """
    while True:
        inputs, labels = mask_for_mlm(ids, attention, tokenizer, probability, generator)
        if (labels != -100).any():
            return inputs, labels
