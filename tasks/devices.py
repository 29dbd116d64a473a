"""Which device a task may use: one task per GPU at a time, one on CPU.

The pool lives in the flow's process (the local runner's threads share it). A task running in a
Ray worker process finds no pool there: Ray already chose its GPU (or none) and set
``CUDA_VISIBLE_DEVICES`` accordingly, so the task takes that GPU or the CPU.
"""

from __future__ import annotations

import contextlib
import queue
import sys
from typing import Iterator


class DevicePool:
    """A fixed set of device slots handed to tasks running in the flow's worker threads."""

    def __init__(self, preference: str = "auto", slots: int | None = None):
        import torch

        if preference == "auto" and torch.cuda.is_available():
            devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        elif preference == "auto":
            devices = ["cpu"]
        else:
            devices = [preference]
        self.size = slots or len(devices)
        self._free: queue.Queue[str] = queue.Queue()
        for i in range(self.size):
            self._free.put(devices[i % len(devices)])

    @contextlib.contextmanager
    def acquire(self) -> Iterator[str]:
        device = self._free.get()
        try:
            yield device
        finally:
            self._free.put(device)


_pool: DevicePool | None = None  # set by configure() in the flow's process


def configure(preference: str, slots: int | None) -> int:
    """Set the process-wide pool; returns how many tasks may hold a device at once."""
    global _pool
    _pool = DevicePool(preference, slots)
    return _pool.size


def device() -> contextlib.AbstractContextManager[str]:
    if _pool is None:
        return contextlib.nullcontext(_assigned())
    return _pool.acquire()


def _assigned() -> str:
    """Outside a configured process: the GPU Ray gave this task (first visible, so ``cuda``), else the CPU."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized() and ray.get_gpu_ids():
        return "cuda"
    return "cpu"
