"""Perturbed-attention guidance (PAG): a third batch chunk whose chosen self-attention layers see an identity map.

The guided prediction is ``uncond + guidance * (cond - uncond) + pag_scale * (cond - perturbed)`` (without
classifier-free guidance: ``cond + pag_scale * (cond - perturbed)``), as in diffusers' ``KolorsPAGPipeline``.
The batch is ``[uncond…, cond…, perturbed…]``; the perturbed rows repeat the conditional ones, and diffusers'
PAG attention processors replace the self-attention of the chosen layers while the loop runs.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.models.attention_processor import (
    Attention,
    PAGCFGIdentitySelfAttnProcessor2_0,
    PAGIdentitySelfAttnProcessor2_0,
)

from ..defaults import PAG_LAYERS
from ..errors import InvalidParameterError
from .conditioning import Conditioner, UNetInputs

DEFAULT_LAYERS = PAG_LAYERS


@dataclass
class PerturbedAttention(Conditioner):
    """PAG at ``scale`` > 0 on the self-attention layers matching ``layers`` (diffusers' ``pag_applied_layers``).

    ``cfg``: whether the loop runs classifier-free guidance (diffusers' PAG processors differ: with guidance the
    batch is ``[uncond, cond, perturbed]``, without it ``[cond, perturbed]``).
    """

    scale: float
    layers: tuple[str, ...] = DEFAULT_LAYERS
    cfg: bool = True
    _cond: slice | None = field(default=None, init=False, repr=False)
    follows_rows = False  # the attention processors chosen in ``attached`` split the batch as ``cfg`` says

    def extra_rows(self, inputs: UNetInputs, n: int) -> UNetInputs:
        rows = inputs.sample.shape[0]
        self._cond = slice(rows - n, rows)  # the conditional rows, which the perturbed ones repeat
        return UNetInputs(*with_perturbed_rows(tuple(inputs), rows, n))

    def guide(self, noise: torch.Tensor, prediction: torch.Tensor, n: int) -> torch.Tensor:
        return noise + self.scale * (prediction[self._cond] - prediction[-n:])

    @contextlib.contextmanager
    def attached(self, unet: torch.nn.Module) -> Iterator[None]:
        """Inside this block the chosen layers of ``unet`` use diffusers' PAG processors; restored afterwards."""
        saved = dict(unet.attn_processors)
        processor = PAGCFGIdentitySelfAttnProcessor2_0() if self.cfg else PAGIdentitySelfAttnProcessor2_0()
        for pattern in self.layers:
            modules = _self_attention_layers(unet, pattern)
            if not modules:
                raise InvalidParameterError(
                    f"pag-layers: no self-attention layer of this UNet matches '{pattern}' (try 'mid', "
                    "'down_blocks.2' or 'up_blocks.0.attentions.1')")
            for module in modules:
                module.processor = processor
        try:
            yield
        finally:
            unet.set_attn_processor(saved)


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


def with_perturbed_rows(value: Any, rows: int, n: int) -> Any:
    """``value`` with the last ``n`` rows of each per-row tensor (first dimension ``rows``) appended again."""
    if isinstance(value, torch.Tensor):
        return torch.cat([value, value[-n:]]) if value.ndim and value.shape[0] == rows else value
    if isinstance(value, dict):
        return {k: with_perturbed_rows(v, rows, n) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(with_perturbed_rows(v, rows, n) for v in value)
    return value
