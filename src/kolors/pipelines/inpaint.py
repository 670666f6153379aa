"""Inpainting and outpainting: redraw the masked part of an image (white = redraw) and keep the rest.

```python
pipe = InpaintPipeline.from_pretrained("Kolors-Inpainting")          # or any ordinary Kolors folder
result = pipe("一只橘猫", "room.png", "mask.png", feather=8)
result = pipe.outpaint("群山", "photo.png", extend=(128, 0, 128, 0))   # left, top, right, bottom pixels
```

Two kinds of model work, following diffusers' SDXL inpainting conventions:

- a ``Kwai-Kolors/Kolors-Inpainting`` folder, whose UNet takes 9 input channels: the noisy latents, the mask
  resized to the latent size, and the latents of the masked image (``image * (mask < 0.5)``), in that order.
  Its official defaults are 25 steps, guidance 6.0, strength 0.999.
- an ordinary 4-channel model, by latent blending: after each step the known region is replaced by the image's
  latents noised to the next timestep (the clean latents after the last step).

Either way the pixels outside the mask are then pasted back from the input, with a linear ramp ``feather`` pixels
wide outside the mask, so that they stay exactly as they were.

ControlNets steer the redrawn part as in :class:`~kolors.pipelines.controlnet.ControlNetPipeline` (the same
``Control`` records, ``controlnets=`` / ``add_controlnet``), with either kind of model; the control maps are
resized to the output size:

```python
pipe = InpaintPipeline.from_pretrained("Kolors-Inpainting", controlnets={"canny": "Kolors-ControlNet-Canny"})
result = pipe("一只橘猫", "room.png", "mask.png", controls=[Control("canny", "cat_outline.png", scale=0.6)])
```
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image

from ..defaults import INPAINT_GUIDANCE, INPAINT_STEPS, INPAINT_STRENGTH
from ..errors import InvalidParameterError, KolorsError
from .conditioning import Conditioner
from .controlnet import DEFAULT_GUIDANCE as CONTROL_GUIDANCE
from .controlnet import Control, ControlNets
from .image_to_image import Image2ImagePipeline, open_image
from .pag import pag_settings
from .text_to_image import GenerationResult

DEFAULT_STRENGTH = INPAINT_STRENGTH
INPAINTING_STEPS = INPAINT_STEPS
INPAINTING_GUIDANCE = INPAINT_GUIDANCE
CANVAS_MULTIPLE = 8  # outpainting canvases are grown to multiples of this


def open_mask(mask: str | os.PathLike | Image.Image) -> Image.Image:
    """A greyscale mask (white: redraw, black: keep) from a path or image; unreadable files are one-line errors."""
    if isinstance(mask, Image.Image):
        return mask.convert("L")
    try:
        with Image.open(mask) as im:
            return im.convert("L")
    except FileNotFoundError:
        raise KolorsError(f"mask not found: {mask}") from None
    except (OSError, ValueError) as exc:
        raise KolorsError(f"cannot read mask {mask}: {exc}") from None


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


class InpaintPipeline(ControlNets, Image2ImagePipeline):
    """A loaded Kolors model (Kolors-Inpainting or an ordinary one) that redraws masked parts of images,
    optionally steered by ControlNets (``controls``)."""

    @property
    def inpainting_unet(self) -> bool:
        """Whether the UNet is a 9-channel inpainting UNet (else latents are blended)."""
        return self.components.unet.config.in_channels == 9

    def __call__(  # type: ignore[override]
        self,
        prompt: str,
        image: str | os.PathLike | Image.Image,
        mask: str | os.PathLike | Image.Image,
        negative_prompt: str | None = None,
        *,
        strength: float = DEFAULT_STRENGTH,
        feather: int = 0,
        resize_mask: bool = False,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
        num_images: int = 1,
        scheduler: str | None = None,
        batch_size: int | None = None,
        pag_scale: float = 0.0,
        pag_layers: str | Sequence[str] | None = None,
        controls: Sequence[Control | Mapping[str, Any]] = (),
        progress: bool | None = None,
    ) -> GenerationResult:
        """Redraw the white part of ``mask`` in ``image`` following ``prompt``; the rest is kept pixel for pixel.

        ``strength`` in [0, 1]: how far the masked part is noised (0 keeps the image). ``feather``: width in pixels
        of the blend ramp outside the mask. ``resize_mask``: stretch a mask of another size to the image's.
        The output has the image's size unless ``width``/``height`` are given (the image and mask are then resized);
        sides that are not multiples of 8 are generated padded to the next multiple and cropped back.
        ``controls``: ControlNet inputs (:class:`~kolors.pipelines.controlnet.Control` or their parameter dicts)
        that steer the redrawn part; with controls ``guidance`` defaults to 6.0.
        """
        picture, mask_image = open_image(image), open_mask(mask)
        if mask_image.size != picture.size and not resize_mask:
            name = Path(mask).name if not isinstance(mask, Image.Image) else "the mask"
            raise KolorsError(f"{name} is {mask_image.width}×{mask_image.height} but the image is "
                              f"{picture.width}×{picture.height}: resize the mask or pass --resize-mask")
        extra: dict[str, Any] = {"strength": strength}
        if not isinstance(image, Image.Image):
            extra["init_image"] = str(Path(image))
        if not isinstance(mask, Image.Image):
            extra["mask"] = str(Path(mask))
        if resize_mask:
            extra["resize_mask"] = True
        return self._inpaint(prompt, picture, mask_image, negative_prompt, strength=strength, feather=feather,
                             extra=extra, width=width, height=height, steps=steps, guidance=guidance, seed=seed,
                             num_images=num_images, scheduler=scheduler, batch_size=batch_size,
                             pag_scale=pag_scale, pag_layers=pag_layers, controls=controls, progress=progress)

    def outpaint(
        self,
        prompt: str,
        image: str | os.PathLike | Image.Image,
        extend: int | Sequence[int],
        negative_prompt: str | None = None,
        *,
        strength: float = DEFAULT_STRENGTH,
        feather: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
        num_images: int = 1,
        scheduler: str | None = None,
        batch_size: int | None = None,
        pag_scale: float = 0.0,
        pag_layers: str | Sequence[str] | None = None,
        controls: Sequence[Control | Mapping[str, Any]] = (),
        progress: bool | None = None,
    ) -> GenerationResult:
        """Grow ``image`` by ``extend`` pixels (one number for every side, or left, top, right, bottom) and fill
        the new area following ``prompt``; the original pixels are kept (``feather`` blends into them).

        ``controls``: ControlNet inputs as for ``__call__``. A map of the original image's size (a photo for
        canny or ``detect``) is put where the image sits, black around it; one of any other size covers the whole
        grown canvas (draw it for the canvas to steer the new area)."""
        sides = [extend] * 4 if isinstance(extend, int) else list(extend)
        if len(sides) != 4 or any(not isinstance(v, int) or v < 0 for v in sides) or not any(sides):
            raise InvalidParameterError(
                f"extend must be 4 non-negative pixel counts (left, top, right, bottom), not all 0, got {extend}")
        original = open_image(image)
        canvas, mask, grown = outpaint_canvas(original, sides)
        extra: dict[str, Any] = {"strength": strength, "extend": list(grown)}
        if not isinstance(image, Image.Image):
            extra["init_image"] = str(Path(image))
        return self._inpaint(prompt, canvas, mask, negative_prompt, strength=strength, feather=feather, extra=extra,
                             width=None, height=None, steps=steps, guidance=guidance, seed=seed,
                             num_images=num_images, scheduler=scheduler, batch_size=batch_size,
                             pag_scale=pag_scale, pag_layers=pag_layers, controls=controls, progress=progress,
                             place_maps=functools.partial(place_on_canvas, image_size=original.size, grown=grown))

    # -- the algorithm, step by step -------------------------------------------------------------

    def _inpaint(self, prompt: str, picture: Image.Image, mask_image: Image.Image, negative_prompt: str | None, *,
                 strength: float, feather: int, extra: dict[str, Any], width: int | None, height: int | None,
                 steps: int | None, guidance: float | None, pag_scale: float,
                 pag_layers: str | Sequence[str] | None, controls: Sequence[Control | Mapping[str, Any]] = (),
                 place_maps: Callable[[Image.Image], Image.Image] | None = None,
                 **kwargs: Any) -> GenerationResult:
        """Generate into the masked region of ``picture``, then paste the kept pixels back (``place_maps``: how
        outpainting puts the control maps on its canvas)."""
        if not 0.0 <= strength <= 1.0:
            raise InvalidParameterError(f"strength must be between 0 and 1, got {strength}")
        if not isinstance(feather, int) or feather < 0:
            raise InvalidParameterError(f"feather must be a whole number of pixels >= 0, got {feather}")
        prepared = self._prepare_controls(controls) if controls else None
        if prepared is not None and place_maps is not None:
            prepared.maps = [place_maps(m) for m in prepared.maps]
        if self.inpainting_unet:
            steps = INPAINTING_STEPS if steps is None else steps
            guidance = INPAINTING_GUIDANCE if guidance is None else guidance
        if prepared is not None:
            guidance = CONTROL_GUIDANCE if guidance is None else guidance
            extra["controls"] = prepared.parameters()
        if feather:
            extra["feather"] = feather

        # An image whose sides are not multiples of 8 is padded (edges repeated, kept) and cropped back at the end.
        size = picture.size
        padded = (-(-size[0] // CANVAS_MULTIPLE) * CANVAS_MULTIPLE, -(-size[1] // CANVAS_MULTIPLE) * CANVAS_MULTIPLE)
        width, height = width or padded[0], height or padded[1]
        crop = size if (width, height) == padded != size else None
        if crop:
            picture = outpaint_canvas(picture, (0, 0, 0, 0))[0]
            keep = np.zeros((padded[1], padded[0]), np.uint8)
            keep[: size[1], : size[0]] = np.asarray(mask_image.resize(size, Image.Resampling.BILINEAR))
            mask_image = Image.fromarray(keep)
            if prepared is not None:  # control maps of the image's size are padded like it, not stretched
                prepared.maps = [outpaint_canvas(m, (0, 0, 0, 0))[0] if m.size == size else m for m in prepared.maps]

        # The image in [-1, 1] and the binarised mask at the output size (diffusers' SDXL inpainting processing).
        image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        mask_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor, do_normalize=False,
                                           do_binarize=True, do_convert_grayscale=True)
        height, width = image_processor.get_default_height_width(picture, height, width)
        pixels = image_processor.preprocess(picture, height=height, width=width).to(torch.float32)
        mask = mask_processor.preprocess(mask_image, height=height, width=width)
        latent_mask = torch.nn.functional.interpolate(
            mask, size=(height // self.vae_scale_factor, width // self.vae_scale_factor))
        region = KnownRegion(latent_mask, pixels * (mask < 0.5), extra_channels=self.inpainting_unet,
                             encode=self._encode_image)
        steering = self._control_conditioners(prepared, width, height) if prepared is not None else []

        result = self._generate(
            prompt, negative_prompt, width=width, height=height, steps=steps, guidance=guidance,
            original_size=None, target_size=None, crop_coords=(0, 0),
            start=functools.partial(self._start_inpainting, pixels=pixels, strength=strength, region=region),
            extra=extra, conditioners=[region, *steering], pag=pag_settings(pag_scale, pag_layers), **kwargs,
        )

        # Paste the kept pixels back (strength 0 redraws nothing).
        kept = ((pixels[0].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()
        weights = blend_weights(mask[0, 0].numpy() >= 0.5, feather) * (strength > 0)
        blended = weights[None, :, :, None] * result.pixels + (1 - weights[None, :, :, None]) * kept[None]
        if crop:
            blended = blended[:, : crop[1], : crop[0]]
        images = [Image.fromarray((p * 255).round().astype(np.uint8)) for p in blended]
        return GenerationResult(images=images, seeds=result.seeds, parameters=result.parameters, pixels=blended)

    @torch.no_grad()
    def _start_inpainting(self, scheduler: SchedulerMixin, generators: list[torch.Generator], steps: int, *,
                          pixels: torch.Tensor, strength: float,
                          region: KnownRegion) -> tuple[torch.Tensor, torch.Tensor]:
        """The first latents (pure noise at strength 1, else the image's noised to the first timestep kept)
        and the timesteps left; the image latents and noise go to ``region`` for blending."""
        scheduler.set_timesteps(steps, device=self.device)
        skipped = steps - min(int(steps * strength), steps)
        timesteps = scheduler.timesteps[skipped * scheduler.order :]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(skipped * scheduler.order)
        from_noise = strength == 1.0
        image_latents = None
        if not from_noise or not region.extra_channels:
            image_latents = self._encode_image(pixels, generators)
        shape = (1, self.components.vae.config.latent_channels, pixels.shape[2] // self.vae_scale_factor,
                 pixels.shape[3] // self.vae_scale_factor)
        noise = torch.cat([torch.randn(shape, generator=g, dtype=self.dtype) for g in generators]).to(self.device)
        region.remember(image_latents, noise)
        if from_noise:
            return noise * scheduler.init_noise_sigma, timesteps
        if len(timesteps) == 0:
            return image_latents, timesteps
        return scheduler.add_noise(image_latents, noise, timesteps[:1].repeat(len(generators))), timesteps
