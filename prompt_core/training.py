"""Training one learner: cross-entropy over class logits, optionally soft targets, MLM and the prior."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup
from transformers.trainer_pt_utils import get_length_grouped_indices

from .checkpoints import Checkpoints
from .device import autocast, select_device
from .learners import Learner
from .seeding import seeded_training
from .settings import TrainConfig
from .stopping import check


@dataclass
class TrainResult:
    """What a training (or adaptation) run did: its optimizer steps and the loss of each."""

    steps: int
    losses: list[float] = field(default_factory=list)

    @property
    def final_loss(self) -> float | None:
        """The last step's loss; None when no step ran."""
        return self.losses[-1] if self.losses else None


def soft_target_loss(logits: torch.Tensor, target_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(target/T) ‖ softmax(logits/T)) · T², PET's distillation loss."""
    log_p = nn.functional.log_softmax(logits / temperature, dim=-1)
    q = nn.functional.softmax(target_logits / temperature, dim=-1)
    return nn.functional.kl_div(log_p, q, reduction="batchmean") * temperature**2


def prior_loss(learner: Learner, prior: Learner, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """KL(prior ‖ learner) of the class probabilities on ``batch`` (learning without forgetting): how far
    training has moved the model's predictions on unlabeled rows from the untrained model's."""
    with torch.no_grad():
        target = prior(batch)
    return soft_target_loss(learner(batch), target.float(), temperature=1.0)


def train(learner: Learner, rows: Sequence[Mapping[str, Any]], targets: Sequence[int] | np.ndarray,
          config: TrainConfig, unlabeled: Sequence[Mapping[str, Any]] | None = None,
          on_log: Callable[[int, float], None] | None = None, progress: bool = True) -> TrainResult:
    """Fine-tune ``learner`` in place; with ``config.peft`` only a new adapter (``Learner.add_adapter``).

    Args:
        learner: the model to train; left in eval mode on ``config.device``.
        rows: the training rows (dicts holding the template's fields).
        targets: class indices (hard labels, cross-entropy) or an (N × classes) array of logits
            (soft targets, tempered KL).
        config: optimisation settings.
        unlabeled: rows for the auxiliary MLM loss (``config.mlm_weight`` > 0) and for keeping the prior
            (``config.prior_weight``): the learner as given is the prior, kept frozen beside it.
        on_log, progress: called with (step, loss) after every step; show a progress bar.

    Returns:
        The steps taken and the loss of each.
    """
    targets_t = _targets(rows, targets)
    soft = targets_t.ndim == 2
    keep_prior = config.prior_weight is not None and bool(unlabeled)
    device = select_device(config.device)
    # seeding, a new adapter's weights and, on the CPU, every dropout mask draw from generators that
    # other threads must not touch meanwhile (prompt_core/seeding.py)
    with seeded_training(config.seed, device) as set_up:
        prior = _ready(learner, config, keep_prior, device)
        set_up()
        total_steps = config.steps(len(rows))
        generator = torch.Generator().manual_seed(config.seed)
        batches = _batches(learner, rows, config, generator)
        uses_pool = config.uses_unlabeled and bool(unlabeled)
        pool_batches = index_batches(len(unlabeled), config.batch_size, generator) if uses_pool else None

        def tensors(source: Sequence[Mapping[str, Any]], idx: list[int]) -> dict[str, torch.Tensor]:
            """A batch tokenized when drawn: a distillation set of a million rows is never tokenized whole."""
            features = learner.collate(learner.featurize([source[i] for i in idx]))
            return {k: v.to(device) for k, v in features.items()}

        def step_loss() -> float:
            total = 0.0
            for _ in range(config.grad_accumulation):
                idx = next(batches)
                batch = tensors(rows, idx)
                with autocast(device, config.precision):
                    logits = learner(batch)
                    y = targets_t[idx].to(device)
                    loss = (soft_target_loss(logits, y.float(), config.temperature) if soft
                            else nn.functional.cross_entropy(logits, y.long()))
                    if pool_batches is not None:
                        loss = loss + _pool_loss(learner, prior, tensors(unlabeled, next(pool_batches)), config,
                                                 generator)
                (loss / config.grad_accumulation).backward()
                total += loss.item() / config.grad_accumulation
            return total

        result = optimize(learner, total_steps, step_loss, learning_rate=config.rate,
                          weight_decay=config.weight_decay, warmup_steps=config.warmup_steps,
                          max_grad_norm=config.max_grad_norm, on_log=on_log, progress=progress)
    learner.eval()
    return result


def _ready(learner: Learner, config: TrainConfig, keep_prior: bool, device: torch.device) -> Learner | None:
    """The learner on ``device`` in training mode, with its adapter (``config.peft``) and compiled on
    CUDA when asked; and when ``keep_prior``, a frozen copy of the learner as given: its prior."""
    prior = copy.deepcopy(learner).eval().requires_grad_(False) if keep_prior else None  # before any adapter
    if config.peft is not None and learner.peft is None:
        learner.add_adapter(config.peft)  # after the seed: the adapter's initial weights are the seed's
    learner.to(device).train()
    if prior is not None:
        prior.to(device)
    if config.compile and device.type == "cuda":
        # the encoder, which both learner kinds call; in place, so saved weights keep their names
        learner.model.base_model.compile(dynamic=True)  # dynamic: every batch has its own length
    return prior


def _batches(learner: Learner, rows: Sequence[Mapping[str, Any]], config: TrainConfig,
             generator: torch.Generator) -> Iterator[list[int]]:
    """The training set's index batches: shuffled, or of rows of about the same length (``group_by_length``)."""
    if config.group_by_length:
        return length_grouped_batches(token_lengths(learner, rows), config.batch_size, generator)
    return index_batches(len(rows), config.batch_size, generator)


def _pool_loss(learner: Learner, prior: Learner | None, batch: Mapping[str, torch.Tensor], config: TrainConfig,
               generator: torch.Generator) -> torch.Tensor | float:
    """The losses on a batch of unlabeled rows: PET's auxiliary MLM loss and keeping the prior."""
    loss = 0.0
    if config.mlm_weight > 0:
        loss = loss + config.mlm_weight * learner.mlm_loss(batch, generator, config.mlm_probability)
    if prior is not None:
        loss = loss + config.prior_weight * prior_loss(learner, prior, batch)
    return loss


def _targets(rows: Sequence[Mapping[str, Any]], targets: Sequence[int] | np.ndarray) -> torch.Tensor:
    """The targets as a tensor, one per row of a non-empty training set."""
    targets_t = torch.tensor(np.asarray(targets))
    if len(rows) == 0:
        raise ValueError("cannot train on an empty training set")
    if len(targets_t) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(targets_t)} targets")
    return targets_t


def optimize(module: nn.Module, total_steps: int, step_loss: Callable[[], float], *, learning_rate: float,
             weight_decay: float, warmup_steps: int, max_grad_norm: float, desc: str = "train",
             on_log: Callable[[int, float], None] | None = None, progress: bool = True,
             checkpoints: Checkpoints | None = None) -> TrainResult:
    """The optimisation loop fine-tuning and backbone adaptation share, so both train alike.

    AdamW without weight decay on biases and norms (as PET), linear warmup then linear decay,
    gradient clipping, a progress bar and the loss curve. ``step_loss`` runs the forward and
    backward passes of one optimizer step and returns that step's loss. With ``checkpoints`` the
    state is saved now and then, and the loop goes on from ``checkpoints.resume``'s step: ``step_loss``
    must then draw what the uninterrupted loop would draw at that step. A stop of the run raises
    ``stopping.Stopped`` before the next step (``prompt_core/stopping.py``); the module is left half-trained.
    """
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in params if not n.endswith(no_decay)], "weight_decay": weight_decay},
         {"params": [p for n, p in params if n.endswith(no_decay)], "weight_decay": 0.0}],
        lr=learning_rate,
        # one kernel per step instead of a loop over tensors: a fifth of a MiniLM step on 2 CPU cores
        fused=params[0][1].device.type in ("cpu", "cuda") if params else None,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    result = TrainResult(steps=total_steps)
    start = checkpoints.start(module, optimizer, scheduler, result.losses) if checkpoints else 0
    bar = tqdm(total=total_steps, initial=start, desc=desc, disable=not progress, leave=False)
    for step in range(start, total_steps):
        check(f"{desc}: stopped after {step} of {total_steps} steps")
        loss = step_loss()
        nn.utils.clip_grad_norm_(module.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        result.losses.append(loss)
        if checkpoints and step + 1 < total_steps:  # the last step's state is the result itself
            checkpoints.after(step + 1, module, optimizer, scheduler, result.losses)
        if on_log:
            on_log(step + 1, loss)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
    bar.close()
    return result


def index_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """An endless stream of shuffled index batches, reshuffled every epoch."""
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]


def length_grouped_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """An endless stream of index batches of rows of about the same length, in a new order every epoch
    (``transformers``' ``get_length_grouped_indices``: the rows shuffled, cut into groups of 50 batches, each
    group sorted by length), so a batch pads little: on CPU a step's time follows its padded tokens.

    Args:
        lengths: each row's token count.
        batch_size: rows per batch.
        generator: the shuffle's random source.
    """
    while True:
        order = get_length_grouped_indices(list(lengths), batch_size, generator=generator)
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]


def token_lengths(learner: Learner, rows: Sequence[Mapping[str, Any]], chunk: int = 4096) -> list[int]:
    """Each row's token count as ``learner`` feeds it, tokenized a chunk at a time (only the counts are kept)."""
    return [len(f["input_ids"]) for start in range(0, len(rows), chunk)
            for f in learner.featurize([rows[i] for i in range(start, min(start + chunk, len(rows)))])]
