"""Which device a task may use: one task per GPU at a time, one on CPU."""

from __future__ import annotations

import contextlib
import queue
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


_pool = DevicePool("cpu", 1)


def configure(preference: str, slots: int | None) -> int:
    """Set the process-wide pool; returns how many tasks may hold a device at once."""
    global _pool
    _pool = DevicePool(preference, slots)
    return _pool.size


def device() -> contextlib.AbstractContextManager[str]:
    return _pool.acquire()
