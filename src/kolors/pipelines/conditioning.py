"""Extra conditioning that plugs into the denoising loop (ControlNet, IP-Adapter, inpainting, …).

Each conditioner sees the loop at three points; the defaults leave it unchanged. Batches hold the
unconditional half first when classifier-free guidance is on (``[uncond…, cond…]``).
"""

from __future__ import annotations

from typing import Any

import torch


class Conditioner:
    """A no-op hook into the denoising loop; subclasses override what they need."""

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

    def after_step(self, latents: torch.Tensor, t: torch.Tensor, next_t: torch.Tensor | None) -> torch.Tensor:
        """The latents after a scheduler step (e.g. re-imposing known regions when inpainting)."""
        return latents


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
