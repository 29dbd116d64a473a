"""Where tensors live and in which precision."""

from __future__ import annotations

import contextlib

import torch

from .settings import Precision, known_device


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


def autocast(device: torch.device, precision: Precision = "auto"):
    """The context that computes in ``precision`` on ``device``: bf16 autocast (weights and the
    optimizer's state stay float32), or nothing for float32.

    Args:
        device: where the computation runs.
        precision: ``bf16``, ``fp32``, or ``auto``: bf16 where ``native_bf16(device)``.
    """
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware: CUDA, or a CPU with AMX tiles. Elsewhere
    a CPU emulates bf16, slower than float32, so ``auto`` keeps float32 there."""
    if device.type == "cuda":
        return True
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch's own probe, which oneDNN's kernels follow
    return device.type == "cpu" and amx is not None and bool(amx())
