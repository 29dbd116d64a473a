"""Checkpoints of a long optimisation (a backbone's adaptation), so that a killed one goes on where it was.

Every other output of a run is a few minutes' work at most and is simply done again; an adaptation can
take hours on a big backbone. Its state is saved now and then (by time, not steps: a step costs
milliseconds on a GPU and seconds on a CPU), and a rerun restores it: the weights, AdamW's moments, the
learning-rate schedule's position, the losses so far and the generator dropout draws from. Saving draws
nothing at random, so a run that saved, was killed and went on ends with the weights of one that never
stopped. Where a state is written, and that it is written atomically, is the caller's business.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .seeding import rng_state, set_rng_state


@dataclass
class Checkpoints:
    """How ``training.optimize`` saves its state, and the state it goes on from.

    Attributes:
        save: writes a state; atomically, as a kill while it writes must leave the previous one whole.
        seconds: training time between two saves (0: after every step).
        resume: the state last saved, or None to start at step 0; let go of once restored (``start``), as a
            big model's is gigabytes.
        step: the steps ``resume`` had taken: where the optimisation goes on from.
    """

    save: Callable[[dict[str, Any]], None]
    seconds: float
    resume: dict[str, Any] | None = None
    step: int = field(init=False)
    _saved_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.step = self.resume["step"] if self.resume else 0

    def start(self, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler, losses: list[float]) -> int:
        """Put ``resume`` (if any) back into the freshly built objects; the step to go on from."""
        self._saved_at = time.monotonic()
        state, self.resume = self.resume, None
        if state is None:
            return 0
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        device = _device(module)
        if state["rng_device"] == device.type:  # else dropout draws otherwise, as on any other device
            set_rng_state(device, state["rng"])
        losses[:] = state["losses"]
        return self.step

    def after(self, step: int, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
              losses: list[float]) -> None:
        """After optimizer step ``step``: save the state if ``seconds`` have passed since the last save."""
        if time.monotonic() - self._saved_at < self.seconds:
            return
        device = _device(module)
        self.save({"step": step, "model": module.state_dict(), "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict(), "rng": rng_state(device), "rng_device": device.type,
                   "losses": list(losses)})
        self._saved_at = time.monotonic()


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device
