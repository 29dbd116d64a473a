"""Where tensors live and in which precision."""

from __future__ import annotations

import contextlib

import torch


def select_device(preference: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present; ``cpu``, ``cuda`` or ``cuda:N`` are taken as asked."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(preference)
    except RuntimeError:
        raise ValueError(f"unknown device {preference!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {preference!r} was asked for, but CUDA is not available here")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {preference!r}: use auto, cpu, cuda or cuda:N")
    return device




def autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision on CPU, where bf16 matmuls are slow on most chips."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
