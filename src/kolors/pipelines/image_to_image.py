"""Image-to-image: start denoising from a noised encoding of an input image instead of pure noise."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image

from ..defaults import IMG2IMG_STRENGTH
from ..devices import move
from ..errors import InvalidParameterError, KolorsError
from .pag import pag_settings
from .text_to_image import GenerationResult, Text2ImagePipeline

DEFAULT_STRENGTH = IMG2IMG_STRENGTH


def open_image(image: str | os.PathLike | Image.Image) -> Image.Image:
    """An RGB PIL image from a path or an image, with a one-line error for unreadable files."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    try:
        with Image.open(image) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise KolorsError(f"image not found: {image}") from None
    except (OSError, ValueError) as exc:
        raise KolorsError(f"cannot read image {image}: {exc}") from None


class Image2ImagePipeline(Text2ImagePipeline):
    """A loaded Kolors model that redraws an input image following a prompt."""

    def __call__(  # type: ignore[override]
        self,
        prompt: str,
        image: str | os.PathLike | Image.Image,
        negative_prompt: str | None = None,
        *,
        strength: float = DEFAULT_STRENGTH,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
        num_images: int = 1,
        scheduler: str | None = None,
        batch_size: int | None = None,
        original_size: tuple[int, int] | None = None,
        target_size: tuple[int, int] | None = None,
        crop_coords: tuple[int, int] = (0, 0),
        pag_scale: float = 0.0,
        pag_layers: str | Sequence[str] | None = None,
        progress: bool | None = None,
    ) -> GenerationResult:
        """Redraw ``image`` with ``strength`` in [0, 1] (0 keeps it, 1 ignores it); size defaults to the image's.

        Of ``steps`` scheduled steps, the last ``int(steps * strength)`` run, as in diffusers.
        """
        if not 0.0 <= strength <= 1.0:
            raise InvalidParameterError(f"strength must be between 0 and 1, got {strength}")
        picture = open_image(image)
        # Micro-conditioning sizes default to the asked size, else the model's default size (as diffusers does),
        # while the output keeps the input image's size unless a size is asked for.
        conditioning_size = (height or self.defaults.height, width or self.defaults.width)
        original_size = original_size or conditioning_size
        target_size = target_size or conditioning_size
        processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        height, width = processor.get_default_height_width(picture, height, width)
        pixels = processor.preprocess(picture, height=height, width=width)
        extra = {"strength": strength}
        if not isinstance(image, Image.Image):
            extra["init_image"] = str(Path(image))
        return self._generate(
            prompt, negative_prompt, width=width, height=height, steps=steps, guidance=guidance, seed=seed,
            num_images=num_images, scheduler=scheduler, batch_size=batch_size, original_size=original_size,
            target_size=target_size, crop_coords=crop_coords, progress=progress,
            start=functools.partial(self._start_from_image, pixels=pixels, strength=strength), extra=extra,
            pag=pag_settings(pag_scale, pag_layers),
        )

    @torch.no_grad()
    def _start_from_image(self, scheduler: SchedulerMixin, generators: list[torch.Generator], steps: int, *,
                          pixels: torch.Tensor, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The image's latents noised to the first timestep that ``strength`` keeps, and the timesteps left."""
        scheduler.set_timesteps(steps, device=self.device)
        skipped = steps - min(int(steps * strength), steps)
        timesteps = scheduler.timesteps[skipped * scheduler.order :]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(skipped * scheduler.order)
        latents = self._encode_image(pixels, generators)
        if len(timesteps) == 0:
            return latents, timesteps
        noise = torch.cat([torch.randn((1, *latents.shape[1:]), generator=g, dtype=self.dtype) for g in generators])
        first = timesteps[:1].repeat(len(generators))
        return scheduler.add_noise(latents, noise.to(self.device), first), timesteps

    def _encode_image(self, pixels: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """Scaled VAE latents of ``pixels`` in [-1, 1], one posterior sample per generator."""
        vae = self.components.vae
        upcast = vae.config.force_upcast
        with self._on_device(vae):
            if upcast:
                move(vae, torch.float32)
            try:
                x = pixels.to(self.device, torch.float32 if upcast else self.dtype)
                samples = [vae.encode(x).latent_dist.sample(generator=g) for g in generators]
            finally:
                if upcast:
                    move(vae, self.dtype)
        return torch.cat(samples).to(self.dtype) * vae.config.scaling_factor
