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
    if precision_used(device, precision) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def precision_used(device: torch.device, precision: Precision = "auto") -> str:
    """What ``autocast(device, precision)`` computes in: ``bf16`` or ``fp32``, ``auto`` resolved."""
    return "bf16" if precision == "bf16" or (precision == "auto" and native_bf16(device)) else "fp32"


def computed_on(device: str, precision: Precision) -> dict[str, str]:
    """The device type (``cpu``, ``cuda``) and precision (``bf16``, ``fp32``) a training, labeling or adaptation
    given ``device`` and ``precision`` computes on and in, ``auto`` resolved on this machine. Both change the
    numbers a run ends with, and ``auto`` alone does not say which were used: runs record this."""
    resolved = select_device(device)
    return {"precision": precision_used(resolved, precision), "device": resolved.type}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware: CUDA, or a CPU with AMX tiles (Intel Xeon
    since Sapphire Rapids) or AVX-512 BF16 dot products (AMD EPYC since Zen 4, Intel Cooper Lake).
    Elsewhere a CPU emulates bf16, slower than float32, so ``auto`` keeps float32 there."""
    if device.type == "cuda":
        return True
    # torch's own probes, which oneDNN's kernels follow
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return device.type == "cpu" and any(probe is not None and bool(probe()) for probe in probes)
