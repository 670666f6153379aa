"""Conditioners: what ControlNets, inpainting, IP-Adapters and perturbed-attention guidance add to the denoising
loop (:func:`kolors.pipelines.denoise.denoise`).

A conditioner sees the loop at fixed points; every hook defaults to "no change". Batches hold the unconditional
rows first when classifier-free guidance is on (``[uncond…, cond…]``); a conditioner may append rows of its own
(:meth:`Conditioner.extra_rows`) and read their predictions back (:meth:`Conditioner.guide`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch


class UNetInputs(NamedTuple):
    """One UNet call: the (scaled) latents, the text tokens, the added conditioning and extra keyword arguments."""

    sample: torch.Tensor
    context: torch.Tensor
    added: dict[str, Any]
    kwargs: dict[str, Any]


class Conditioner:
    """A no-op hook into the denoising loop; subclasses override what they need."""

    # Whether the rows it handles may change from step to step (the unconditional ones dropped once guidance
    # stops); a conditioner that fixes the batch layout for the whole loop sets this False.
    follows_rows = True

    def begin(self, scheduler: Any, generators: list[torch.Generator], latents: torch.Tensor,
              timesteps: torch.Tensor) -> None:
        """Called once per batch before its first step, with one CPU generator per image."""

    def model_input(self, model_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The UNet's input from the scaled latents (e.g. extra mask channels for inpainting UNets)."""
        return model_in

    def unet_kwargs(self, model_in: torch.Tensor, t: torch.Tensor, progress: float, context: torch.Tensor,
                    added: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Extra keyword arguments for this UNet call; ``progress`` is the step's fraction in [0, 1)."""
        return {}

    def extra_rows(self, inputs: UNetInputs, n: int) -> UNetInputs:
        """The UNet call with rows of this conditioner's own appended (``n``: images in the batch)."""
        return inputs

    def guide(self, noise: torch.Tensor, prediction: torch.Tensor, n: int) -> torch.Tensor:
        """The guided noise after classifier-free guidance, given the UNet's whole ``prediction`` (all rows)."""
        return noise

    def after_step(self, latents: torch.Tensor, t: torch.Tensor, next_t: torch.Tensor | None) -> torch.Tensor:
        """The latents after a scheduler step (e.g. re-imposing known regions when inpainting)."""
        return latents

    def modules(self) -> list[torch.nn.Module]:
        """Models this conditioner runs, which must be on the compute device while the loop runs (offload)."""
        return []

    @contextlib.contextmanager
    def attached(self, unet: torch.nn.Module) -> Iterator[None]:
        """A change to the UNet that lasts while the loop runs (e.g. attention processors), undone afterwards."""
        yield


def merge_unet_kwargs(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One set of UNet keyword arguments from several conditioners (residuals add, the rest must not clash)."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key not in merged:
                merged[key] = value
            elif key == "down_block_additional_residuals":
                merged[key] = [a + b for a, b in zip(merged[key], value, strict=True)]
            elif key == "mid_block_additional_residual":
                merged[key] = merged[key] + value
            elif key == "added_cond_kwargs":
                merged[key] = {**merged[key], **value}
            else:
                raise ValueError(f"two conditioners both set the UNet argument '{key}'")
    return merged
