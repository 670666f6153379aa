"""Choosing the torch device and dtype from user-facing names.

The name tuples are importable without importing torch (the CLI builds its parser from them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import InvalidParameterError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("float32", "float16", "bfloat16")
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def is_device_name(name: str) -> bool:
    """Whether ``name`` is one of ``DEVICES``, with a ``:N`` index or not (``cuda:1``); no torch import."""
    return name.split(":")[0] in DEVICES


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The device for ``name``: "auto" picks cuda, then mps, then cpu."""
    import torch

    if isinstance(name, torch.device):
        return name
    if not is_device_name(name):
        raise InvalidParameterError(f"unknown device '{name}': use one of {', '.join(DEVICES)}")
    base = name.split(":")[0]
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError("device 'cuda' was asked for but no CUDA GPU is visible: use --device cpu")
    if base == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvalidParameterError("device 'mps' was asked for but Metal is not available: use --device cpu")
    return torch.device(name)


def resolve_dtype(name: str | torch.dtype, device: torch.device) -> torch.dtype:
    """The compute dtype for ``name``: "auto" is float16 on CUDA/MPS and float32 on CPU."""
    import torch

    if isinstance(name, torch.dtype):
        return name
    name = _DTYPE_ALIASES.get(name, name)
    if name == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if name not in DTYPES:
        raise InvalidParameterError(f"unknown dtype '{name}': use auto, {', '.join(DTYPES)}")
    return getattr(torch, name)


def dtype_name(dtype: torch.dtype) -> str:
    """The user-facing name of a torch dtype ("float16", ...)."""
    return str(dtype).removeprefix("torch.")


def move(module: torch.nn.Module, *args, **kwargs) -> torch.nn.Module:
    """``module.to(...)`` without diffusers' per-call "modules kept in float32" warning (none are, for Kolors)."""
    import torch

    return torch.nn.Module.to(module, *args, **kwargs)
