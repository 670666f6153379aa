"""Inpainting and outpainting: the parts of the algorithm that hold the unmasked region (white = redraw).

Two kinds of model work, following diffusers' SDXL inpainting conventions:

- a ``Kwai-Kolors/Kolors-Inpainting`` folder, whose UNet takes 9 input channels: the noisy latents, the mask
  resized to the latent size, and the latents of the masked image (``image * (mask < 0.5)``), in that order.
  Its official defaults are 25 steps, guidance 6.0, strength 0.999.
- an ordinary 4-channel model, by latent blending: after each step the known region is replaced by the image's
  latents noised to the next timestep (the clean latents after the last step).

Either way the pixels outside the mask are then pasted back from the input (:func:`paste_kept`), with a linear
ramp ``feather`` pixels wide outside the mask, so that they stay exactly as they were. Outpainting is inpainting
on a grown canvas (:func:`outpaint_canvas`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..diffusion.conditioning import Conditioner

CANVAS_MULTIPLE = 8  # outpainting canvases are grown to multiples of this


def outpaint_canvas(image: Image.Image, extend: Sequence[int], multiple: int = CANVAS_MULTIPLE
                    ) -> tuple[Image.Image, Image.Image, tuple[int, int, int, int]]:
    """``image`` on a canvas grown by ``extend`` = (left, top, right, bottom) pixels, its mask, and the extension.

    The new area repeats the image's edge pixels (a start for models that blend latents); the right and bottom
    extensions grow so that both sides are multiples of ``multiple``.
    """
    left, top, right, bottom = (int(v) for v in extend)
    right += -(image.width + left + right) % multiple
    bottom += -(image.height + top + bottom) % multiple
    pixels = np.pad(np.asarray(image.convert("RGB")), ((top, bottom), (left, right), (0, 0)), mode="edge")
    mask = np.full(pixels.shape[:2], 255, np.uint8)
    mask[top : top + image.height, left : left + image.width] = 0
    return Image.fromarray(pixels), Image.fromarray(mask), (left, top, right, bottom)


def place_on_canvas(control_map: Image.Image, image_size: tuple[int, int], grown: Sequence[int]) -> Image.Image:
    """A control map made for the original image (of ``image_size``) where that image sits on the outpainting
    canvas grown by ``grown`` = (left, top, right, bottom), black around it: no edges, no pose, farthest depth.
    Maps of any other size are returned unchanged (they are stretched to the canvas like any control map)."""
    if control_map.size != tuple(image_size):
        return control_map
    left, top, right, bottom = grown
    canvas = Image.new(control_map.mode, (image_size[0] + left + right, image_size[1] + top + bottom))
    canvas.paste(control_map, (left, top))
    return canvas


def blend_weights(mask: np.ndarray, feather: int) -> np.ndarray:
    """Per-pixel weight of the generated image: 1 inside ``mask`` (bool, H×W), falling linearly to 0 over
    ``feather`` pixels outside it."""
    if feather <= 0 or mask.all() or not mask.any():
        return mask.astype(np.float32)
    import cv2

    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)  # to the nearest masked pixel
    return np.clip(1.0 - distance / (feather + 1), 0.0, 1.0).astype(np.float32)


class KnownRegion(Conditioner):
    """Holds the unmasked part of the image in the loop: the 9-channel UNet's extra inputs, or latent blending.

    ``mask``: (1, 1, h, w) at the latent size, 1 where the image is redrawn. ``masked_pixels``: the input with the
    masked part zeroed, (1, 3, H, W) in [-1, 1]. ``extra_channels``: the UNet takes the mask and the masked
    image's latents as inputs (9-channel UNet); else the known latents are blended back after each step.
    ``encode`` turns pixels into scaled latents, one posterior sample per generator.
    """

    def __init__(self, mask: torch.Tensor, masked_pixels: torch.Tensor, extra_channels: bool,
                 encode: Callable[[torch.Tensor, list[torch.Generator]], torch.Tensor]) -> None:
        self.mask = mask
        self.masked_pixels = masked_pixels
        self.extra_channels = extra_channels
        self.encode = encode
        self.image_latents: torch.Tensor | None = None
        self.noise: torch.Tensor | None = None
        self._scheduler: Any = None
        self._masked_latents: torch.Tensor | None = None

    def remember(self, image_latents: torch.Tensor | None, noise: torch.Tensor) -> None:
        """The clean image latents and the noise the batch started from (for latent blending)."""
        self.image_latents, self.noise = image_latents, noise

    def begin(self, scheduler: Any, generators: list[torch.Generator], latents: torch.Tensor,
              timesteps: torch.Tensor) -> None:
        self._scheduler = scheduler
        self.mask = self.mask.to(latents.device, latents.dtype)
        # Sampled for 4-channel UNets too: diffusers does, and the generators' later draws stay the same.
        self._masked_latents = self.encode(self.masked_pixels, generators).to(latents.device, latents.dtype)

    def model_input(self, model_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not self.extra_channels:
            return model_in
        rows = model_in.shape[0]
        masked = self._masked_latents.repeat(rows // self._masked_latents.shape[0], 1, 1, 1)
        return torch.cat([model_in, self.mask.expand(rows, -1, -1, -1), masked], dim=1)

    def after_step(self, latents: torch.Tensor, t: torch.Tensor, next_t: torch.Tensor | None) -> torch.Tensor:
        if self.extra_channels:
            return latents
        known = self.image_latents
        if next_t is not None:
            known = self._scheduler.add_noise(known, self.noise, next_t.reshape(1))
        return (1 - self.mask) * known + self.mask * latents


def paste_kept(generated: np.ndarray, kept: np.ndarray, mask: np.ndarray, feather: int) -> np.ndarray:
    """``generated`` (N, H, W, 3) inside ``mask`` (bool, H×W) and ``kept`` (H, W, 3) outside it, blended over
    ``feather`` pixels."""
    weights = blend_weights(mask, feather)[None, :, :, None]
    return weights * generated + (1 - weights) * kept[None]
