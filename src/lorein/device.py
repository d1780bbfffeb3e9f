"""Torch devices named on the command line."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device ``name`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``), checked to exist here.

    Raises
    ------
    ValueError
        For a name torch does not know, or a CUDA device on a machine without one, naming the
        option to use instead.
    """
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available here (use --device cpu)")
    return device
