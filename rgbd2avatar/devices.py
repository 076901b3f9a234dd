"""Choosing the compute device: CUDA when present, else CPU; ``--device`` overrides."""

from __future__ import annotations

import torch

from rgbd2avatar.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` → CUDA if available, else CPU; otherwise the named device, checked.

    Args:
        name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"Unknown device {name!r}: use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asks for CUDA but no CUDA GPU is available; use --device cpu.")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), e.g. before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
