"""Seeds that hold whatever else the process does at the same time.

torch has one CPU random generator per process (and one per GPU), shared by all its threads. Dropout
draws from the generator of the device it runs on, and loading a checkpoint draws from the CPU's for
the weights the checkpoint lacks. The flow runs its tasks in threads of one process, so a model
loading for a labeling task while another thread trained on the CPU took some of that training's
dropout masks, or rewound them (loading seeds the generator and restores it afterwards): the trained
weights depended on the timing of the two. So whoever seeds or draws from the CPU's generator holds
``CPU_RNG`` while it does, and a training on a GPU seeds that GPU's generator only, never another's.
"""

from __future__ import annotations

import contextlib
import random
import threading
from typing import Callable, Iterator

import numpy as np
import torch

CPU_RNG = threading.RLock()


def set_seed(seed: int, device: torch.device | None = None) -> None:
    """Seed Python's, NumPy's and torch's CPU generators, and ``device``'s own when it is a GPU.

    Args:
        seed: the seed.
        device: where the training runs; other GPUs' generators are left alone, as they may be
            another training's.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    if device is not None and device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


@contextlib.contextmanager
def seeded_training(seed: int, device: torch.device) -> Iterator[Callable[[], None]]:
    """Seed the generators a training on ``device`` draws from, and keep other threads off the CPU's.

    Yields ``set_up``, to call once the training's set-up has made its draws on the CPU (a new
    adapter's initial weights). From then on a training on a GPU, whose dropout draws from that
    GPU's generator, lets the CPU's go; one on the CPU holds it to its end, so trainings on the CPU
    run one at a time in a process (Ray's workers are processes of their own).

    Args:
        seed: the training's seed.
        device: where it runs.
    """
    with contextlib.ExitStack() as held:
        held.enter_context(CPU_RNG)
        set_seed(seed, device)
        yield (lambda: None) if device.type == "cpu" else held.close


@contextlib.contextmanager
def seeded_cpu(seed: int) -> Iterator[None]:
    """The CPU's generator seeded with ``seed`` for the block, then as it was, and no other thread
    drawing from it meanwhile (a model's missing weights come out the same every time)."""
    with CPU_RNG, torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def rng_state(device: torch.device) -> torch.Tensor:
    """The state of the generator a training on ``device`` draws its dropout masks from (a checkpoint's)."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return torch.mps.get_rng_state()
    return torch.get_rng_state()


def set_rng_state(device: torch.device, state: torch.Tensor) -> None:
    """Restore ``rng_state(device)``: the dropout masks go on as if the training had never stopped."""
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    elif device.type == "mps":
        torch.mps.set_rng_state(state)
    else:
        torch.set_rng_state(state)
