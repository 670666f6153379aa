"""Cheap previews of latents while a generation runs: a per-model linear map from latent channels to RGB.

The map is fitted once per pipeline, by least squares, on the model's own VAE: random latents (smooth, unit
variance, as the loop holds them) are decoded once and matched to the mean colour over each latent's pixels. A
preview is then one small matrix product per image, at the latent resolution (1/8 of the output size for Kolors),
with no VAE decode. It suits VAEs whose latents are close to linear in colour, as SDXL's are; the built-in model's
small VAE is not (hues come out wrong, shapes in place), so its small images are decoded instead
(``Pipeline.preview``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from .pipeline import Pipeline

PATCHES = 4  # independent latent values per side of each fitting image
FIT_IMAGES = 16
FIT_SIDE = 8  # latents per side


@dataclass
class LatentPreview:
    """RGB in [0, 1] = latents (scaled, as the loop holds them) · ``weight`` + ``bias``."""

    weight: torch.Tensor  # (latent channels, 3)
    bias: torch.Tensor  # (3,)

    @classmethod
    @torch.no_grad()
    def fit(cls, pipe: Pipeline) -> LatentPreview:
        """The map for ``pipe``'s VAE (seeded: the same map every time)."""
        g = torch.Generator("cpu").manual_seed(0)
        latents = torch.randn(FIT_IMAGES, pipe.latent_channels, PATCHES, PATCHES, generator=g)
        latents = torch.nn.functional.interpolate(latents, size=(FIT_SIDE, FIT_SIDE), mode="nearest")
        pixels = torch.from_numpy(pipe.decode(latents.to(pipe.device, pipe.dtype))).permute(0, 3, 1, 2)
        target = torch.nn.functional.avg_pool2d(pixels, pipe.vae_scale_factor)  # the colour over each latent
        x = torch.cat([latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]),
                       torch.ones(latents.shape[0] * FIT_SIDE * FIT_SIDE, 1)], dim=1)
        y = target.permute(0, 2, 3, 1).reshape(-1, 3)
        solution = torch.linalg.lstsq(x.double(), y.double()).solution.float()
        return cls(weight=solution[:-1], bias=solution[-1])

    def __call__(self, latents: torch.Tensor) -> list[Image.Image]:
        """One RGB image per row of ``latents`` (N, C, h, w), h×w pixels."""
        rgb = torch.einsum("nchw,ck->nhwk", latents.detach().float().cpu(), self.weight) + self.bias
        pixels = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        return [Image.fromarray(np.ascontiguousarray(p)) for p in pixels]
