"""Where tensors live and in which precision."""

from __future__ import annotations

import contextlib

import torch

from .settings import known_device


def select_device(preference: str = "auto") -> torch.device:
    """The torch device to compute on.

    Args:
        preference: ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The device; ValueError for an unknown name, or CUDA asked for where there is none.
    """
    if known_device(preference) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {preference!r} was asked for, but CUDA is not available here")
    return device


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision on CPU, where bf16 matmuls are slow on most chips."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
