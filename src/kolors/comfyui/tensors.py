"""Conversions between ComfyUI's tensors and what kolors takes and gives.

ComfyUI's conventions: ``IMAGE`` is a float tensor (batch, height, width, channels) in [0, 1]; ``MASK`` is
(batch, height, width) (or (height, width)) in [0, 1], 1 where the image is to be redrawn; ``LATENT`` is
``{"samples": (batch, channels, h, w)}`` holding the VAE's *unscaled* latents (the model multiplies by the VAE's
scaling factor itself; an optional ``noise_mask`` marks what to redraw). kolors' pipeline works on scaled
latents, so a LATENT's samples are kolors latents divided by the VAE's ``scaling_factor``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image


def image_count(image: torch.Tensor) -> int:
    return 1 if image.ndim == 3 else image.shape[0]


def to_pil(image: torch.Tensor, index: int = 0) -> Image.Image:
    """Image ``index`` of an IMAGE batch as an RGB PIL image (8 bits, rounded)."""
    if image.ndim == 3:
        image = image[None]
    pixels = image[min(index, image.shape[0] - 1), :, :, :3].float().clamp(0, 1).cpu().numpy()
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return Image.fromarray((pixels * 255).round().astype(np.uint8))


def mask_to_pil(mask: torch.Tensor, index: int = 0) -> Image.Image:
    """Mask ``index`` of a MASK batch (white = redraw) as a greyscale PIL image."""
    if mask.ndim == 2:
        mask = mask[None]
    values = mask[min(index, mask.shape[0] - 1)].float().clamp(0, 1).cpu().numpy()
    return Image.fromarray((values * 255).round().astype(np.uint8), mode="L")


def from_pixels(pixels: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """An IMAGE batch from (N, H, W, 3) float arrays in [0, 1] (several arrays: concatenated)."""
    if isinstance(pixels, list):
        pixels = np.concatenate(pixels)
    return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))


def from_pil(images: list[Image.Image]) -> torch.Tensor:
    """An IMAGE batch from RGB PIL images of one size."""
    return torch.from_numpy(np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255 for im in images]))


def to_latent(pipe: Any, latents: torch.Tensor) -> dict[str, torch.Tensor]:
    """A LATENT from kolors latents (scaled as the UNet sees them)."""
    scale = pipe.components.vae.config.scaling_factor
    return {"samples": (latents.float() / scale).cpu()}


def from_latent(pipe: Any, latent: dict[str, Any], index: int = 0) -> torch.Tensor:
    """Latent ``index`` of a LATENT batch as (1, C, h, w) kolors latents (scaled)."""
    samples = latent["samples"]
    scale = pipe.components.vae.config.scaling_factor
    return samples[min(index, samples.shape[0] - 1)][None].float() * scale


def latent_noise_mask(latent: dict[str, Any], index: int, size: tuple[int, int]) -> Image.Image | None:
    """A LATENT's ``noise_mask`` (what to redraw) for image ``index``, as a mask image of ``size`` pixels."""
    mask = latent.get("noise_mask")
    if mask is None:
        return None
    mask = mask.reshape(-1, mask.shape[-2], mask.shape[-1])
    picked = mask[min(index, mask.shape[0] - 1)][None, None].float()
    resized = torch.nn.functional.interpolate(picked, size=(size[1], size[0]), mode="bilinear")
    return mask_to_pil(resized[0])
