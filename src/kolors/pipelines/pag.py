"""Perturbed-attention guidance (PAG): a third batch chunk whose chosen self-attention layers see an identity map.

The guided prediction is ``uncond + guidance * (cond - uncond) + pag_scale * (cond - perturbed)`` (without
classifier-free guidance: ``cond + pag_scale * (cond - perturbed)``), as in diffusers' ``KolorsPAGPipeline``.
The batch is ``[uncond…, cond…, perturbed…]``; the perturbed rows repeat the conditional ones, and diffusers'
PAG attention processors replace the self-attention of the chosen layers while the loop runs.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.attention_processor import (
    Attention,
    PAGCFGIdentitySelfAttnProcessor2_0,
    PAGIdentitySelfAttnProcessor2_0,
)

from ..errors import InvalidParameterError

DEFAULT_LAYERS = ("mid",)  # diffusers' KolorsPAGPipeline default
MAX_SCALE = 100.0


@dataclass(frozen=True)
class PerturbedAttention:
    """PAG settings: ``scale`` > 0 and the layer-name patterns (diffusers' ``pag_applied_layers``)."""

    scale: float
    layers: tuple[str, ...] = DEFAULT_LAYERS

    def parameters(self) -> dict[str, Any]:
        """The settings as stored in the generation parameters."""
        return {"pag_scale": self.scale, "pag_layers": list(self.layers)}


def pag_settings(scale: float | None, layers: str | Sequence[str] | None = None) -> PerturbedAttention | None:
    """Validated PAG settings, or None when ``scale`` is 0/None (PAG off)."""
    if scale is None or scale == 0:
        return None
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or not 0 < scale <= MAX_SCALE:
        raise InvalidParameterError(f"pag-scale must be between 0 and {MAX_SCALE:g}, got {scale}")
    if layers is None:
        layers = DEFAULT_LAYERS
    if isinstance(layers, str):
        layers = [part.strip() for part in layers.split(",")]
    layers = tuple(layers)
    if not layers or any(not isinstance(x, str) or not x for x in layers):
        raise InvalidParameterError(f"pag-layers must be layer names such as 'mid' or 'down_blocks.2', got {layers}")
    for layer in layers:
        try:
            re.compile(layer)
        except re.error as exc:
            raise InvalidParameterError(f"pag-layers: '{layer}' is not a valid pattern ({exc})") from None
    return PerturbedAttention(float(scale), layers)


def _self_attention_layers(unet: torch.nn.Module, pattern: str) -> list[Attention]:
    """The self-attention modules whose name matches ``pattern`` (diffusers' matching rule)."""
    last = pattern.split(".")[-1]
    found = []
    for name, module in unet.named_modules():
        if not isinstance(module, Attention) or module.is_cross_attention or re.search(pattern, name) is None:
            continue
        tail = name.split(".")[-1]
        if last.isnumeric() and tail.isnumeric() and last == tail:  # diffusers skips these numeric-suffix matches
            continue
        found.append(module)
    return found


@contextlib.contextmanager
def perturbed_self_attention(unet: torch.nn.Module, pag: PerturbedAttention | None, cfg: bool) -> Iterator[None]:
    """Inside this block the PAG layers of ``unet`` use diffusers' PAG processors; restored afterwards."""
    if pag is None:
        yield
        return
    saved = dict(unet.attn_processors)
    processor = PAGCFGIdentitySelfAttnProcessor2_0() if cfg else PAGIdentitySelfAttnProcessor2_0()
    for pattern in pag.layers:
        modules = _self_attention_layers(unet, pattern)
        if not modules:
            raise InvalidParameterError(
                f"pag-layers: no self-attention layer of this UNet matches '{pattern}' (try 'mid', 'down_blocks.2' "
                f"or 'up_blocks.0.attentions.1')")
        for module in modules:
            module.processor = processor
    try:
        yield
    finally:
        unet.set_attn_processor(saved)


def with_perturbed_rows(value: Any, rows: int, n: int) -> Any:
    """``value`` with the last ``n`` rows of each per-row tensor (first dimension ``rows``) appended again."""
    if isinstance(value, torch.Tensor):
        return torch.cat([value, value[-n:]]) if value.ndim and value.shape[0] == rows else value
    if isinstance(value, dict):
        return {k: with_perturbed_rows(v, rows, n) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(with_perturbed_rows(v, rows, n) for v in value)
    return value
