"""The four tasks, each a small function that plans a generation for the denoising loop.

A :class:`TaskPlan` says where the loop starts (the first latents and the timesteps to run), which conditioners
join it, and how the decoded pixels become the output:

- text-to-image starts from noise;
- image-to-image from the input image's latents noised to the first timestep that ``strength`` keeps;
- inpainting likewise, with a conditioner holding the unmasked region, and pastes the kept pixels back;
- outpainting is inpainting on a canvas grown around the image.

ControlNet controls join any task as conditioners (:func:`control_conditioners`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from ..adapters.controlnet import ControlNetConditioner
from ..annotators.maps import control_map
from ..diffusion.conditioning import Conditioner
from ..errors import InvalidParameterError
from ..images import open_image, open_mask
from ..request import IMAGE_TO_IMAGE, INPAINT, OUTPAINT, TEXT_TO_IMAGE, GenerationRequest
from ..schedulers import make_scheduler
from .inpainting import CANVAS_MULTIPLE, KnownRegion, outpaint_canvas, paste_kept, place_on_canvas

if TYPE_CHECKING:
    from .pipeline import Pipeline

# (scheduler, one CPU generator per image, steps) -> (first latents on the device, timesteps to run)
StartFn = Callable[[Any, list[torch.Generator], int], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TaskPlan:
    """What the loop needs from a task, and how its decoded pixels (N, H, W, 3) become the output."""

    start: StartFn
    conditioners: list[Conditioner] = field(default_factory=list)
    finish: Callable[[np.ndarray], np.ndarray] = lambda pixels: pixels


def plan(pipe: Pipeline, request: GenerationRequest) -> TaskPlan:
    """The plan for a resolved request (every size and default filled in by ``Pipeline.resolve``)."""
    planner = {TEXT_TO_IMAGE: text_to_image, IMAGE_TO_IMAGE: image_to_image, INPAINT: inpaint,
               OUTPAINT: outpaint}[request.resolved_task]
    return planner(pipe, request)


# --- the tasks -------------------------------------------------------------------------------------------------
def text_to_image(pipe: Pipeline, request: GenerationRequest) -> TaskPlan:
    """Pure-noise latents and the whole schedule (fast mode: every k-th timestep of exact mode's)."""
    width, height = request.width, request.height

    def start(scheduler: Any, generators: list[torch.Generator], steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        subset = fast_timesteps(pipe, request, scheduler, steps)
        if subset is not None:
            scheduler.set_timesteps(timesteps=subset, device=pipe.device)
        else:
            scheduler.set_timesteps(steps, device=pipe.device)
        noise = pipe.initial_noise(generators, height, width)
        return noise * scheduler.init_noise_sigma, scheduler.timesteps

    return TaskPlan(start, control_conditioners(pipe, request))


def image_to_image(pipe: Pipeline, request: GenerationRequest) -> TaskPlan:
    """The input image redrawn from its latents noised to the first timestep ``strength`` keeps."""
    picture = open_image(request.init_image, "image")
    pixels = VaeImageProcessor(vae_scale_factor=pipe.vae_scale_factor).preprocess(
        picture, height=request.height, width=request.width)
    return TaskPlan(functools.partial(_start_from_image, pipe, pixels, request.strength,
                                      latents=given_latents(pipe, request)),
                    control_conditioners(pipe, request))


def inpaint(pipe: Pipeline, request: GenerationRequest) -> TaskPlan:
    """The white part of the mask redrawn, the rest held by :class:`KnownRegion` and pasted back."""
    picture = open_image(request.init_image, "image")
    mask = open_mask(request.mask)
    return _inpaint(pipe, request, picture, mask, place=None)


def outpaint(pipe: Pipeline, request: GenerationRequest) -> TaskPlan:
    """The canvas grown by ``extend`` around the image, the new area inpainted. A control map of the image's size
    is put where the image sits on the canvas (black around it)."""
    original = open_image(request.init_image, "image")
    canvas, mask, grown = outpaint_canvas(original, request.extend)
    return _inpaint(pipe, request, canvas, mask,
                    place=functools.partial(place_on_canvas, image_size=original.size, grown=grown))


def _inpaint(pipe: Pipeline, request: GenerationRequest, picture: Image.Image, mask_image: Image.Image,
             place: Callable[[Image.Image], Image.Image] | None) -> TaskPlan:
    # Sides that are not multiples of 8 are generated padded (edges repeated, kept) and cropped back.
    size = picture.size
    crop = size if (request.width, request.height) == _padded(size) != size else None
    pad_maps = None
    if crop:
        picture = outpaint_canvas(picture, (0, 0, 0, 0))[0]
        keep = np.zeros((request.height, request.width), np.uint8)
        keep[: size[1], : size[0]] = np.asarray(mask_image.resize(size, Image.Resampling.BILINEAR))
        mask_image = Image.fromarray(keep)
        pad_maps = lambda m: outpaint_canvas(m, (0, 0, 0, 0))[0] if m.size == size else m  # noqa: E731

    # The image in [-1, 1] and the binarised mask at the output size (diffusers' SDXL inpainting processing).
    width, height = request.width, request.height
    image_processor = VaeImageProcessor(vae_scale_factor=pipe.vae_scale_factor)
    mask_processor = VaeImageProcessor(vae_scale_factor=pipe.vae_scale_factor, do_normalize=False,
                                       do_binarize=True, do_convert_grayscale=True)
    pixels = image_processor.preprocess(picture, height=height, width=width).to(torch.float32)
    mask = mask_processor.preprocess(mask_image, height=height, width=width)
    latent_mask = torch.nn.functional.interpolate(
        mask, size=(height // pipe.vae_scale_factor, width // pipe.vae_scale_factor))
    region = KnownRegion(latent_mask, pixels * (mask < 0.5), extra_channels=pipe.inpainting_unet,
                         encode=pipe.encode_pixels)
    place_maps = place or pad_maps
    steering = control_conditioners(pipe, request, place=place_maps)

    if picture.size == (width, height):  # the input's own 8-bit values (v / 255), not their [-1, 1] round trip
        kept = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255
    else:
        kept = ((pixels[0].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()
    redrawn = (mask[0, 0].numpy() >= 0.5) & (request.strength > 0)  # strength 0 redraws nothing

    def finish(generated: np.ndarray) -> np.ndarray:
        out = paste_kept(generated, kept, redrawn, request.feather)
        return out[:, : crop[1], : crop[0]] if crop else out

    start = functools.partial(_start_from_image, pipe, pixels, request.strength, region=region,
                              latents=given_latents(pipe, request))
    return TaskPlan(start, [region, *steering], finish)


def given_latents(pipe: Pipeline, request: GenerationRequest) -> torch.Tensor | None:
    """The request's ``init_latents`` on the device, checked to fit the output size (None when it has none)."""
    if request.init_latents is None:
        return None
    latents = torch.as_tensor(request.init_latents)
    f = pipe.vae_scale_factor
    expected = (1, pipe.latent_channels, request.height // f, request.width // f)
    if tuple(latents.shape) != expected:
        _, c, h, w = latents.shape
        raise InvalidParameterError(
            f"the input latents are {w * f}x{h * f} pixels with {c} channels but this generation needs "
            f"{request.width}x{request.height} with {pipe.latent_channels}: give latents of the output size "
            "(or leave width and height unset)")
    return latents.to(pipe.device, pipe.dtype)


def _padded(size: tuple[int, int]) -> tuple[int, int]:
    return tuple(-(-side // CANVAS_MULTIPLE) * CANVAS_MULTIPLE for side in size)  # type: ignore[return-value]


# --- where the loop starts -------------------------------------------------------------------------------------
@torch.no_grad()
def _start_from_image(pipe: Pipeline, pixels: torch.Tensor, strength: float, scheduler: Any,
                      generators: list[torch.Generator], steps: int, *,
                      region: KnownRegion | None = None,
                      latents: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The image's latents noised to the first timestep that ``strength`` keeps, and the timesteps left.

    Of ``steps`` scheduled steps the last ``int(steps * strength)`` run, as in diffusers. For inpainting
    (``region``) strength 1 starts from pure noise, and the image latents and noise go to the region for blending.
    ``latents``: the image's latents as given (the same for every image), instead of encoding ``pixels``.
    """
    scheduler.set_timesteps(steps, device=pipe.device)
    skipped = steps - min(int(steps * strength), steps)
    timesteps = scheduler.timesteps[skipped * scheduler.order :]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(skipped * scheduler.order)
    from_noise = region is not None and strength == 1.0
    image_latents = None
    if latents is not None:
        image_latents = latents.repeat(len(generators), 1, 1, 1)
    elif not from_noise or not region.extra_channels:
        image_latents = pipe.encode_pixels(pixels, generators)  # posterior samples first, then the noise
    noise = pipe.initial_noise(generators, pixels.shape[2], pixels.shape[3])
    if region is not None:
        region.remember(image_latents, noise)
    if from_noise:
        return noise * scheduler.init_noise_sigma, timesteps
    if len(timesteps) == 0:
        return image_latents, timesteps
    return scheduler.add_noise(image_latents, noise, timesteps[:1].repeat(len(generators))), timesteps


def fast_timesteps(pipe: Pipeline, request: GenerationRequest, scheduler: Any, steps: int) -> list[int] | None:
    """Fast mode at its default step count: every k-th timestep of exact mode's schedule (None otherwise).

    Starting from exact mode's first (noisiest) timestep keeps fast mode on exact mode's path: a schedule of
    its own starts at a lower noise level, and on the built-in model a quarter of the images then came out
    different (another background or shape; PSNR < 10 dB against exact mode) instead of none.
    """
    fraction = pipe.run_settings(request).step_fraction
    if fraction >= 1 or "timesteps" not in inspect.signature(scheduler.set_timesteps).parameters:
        return None
    exact = make_scheduler("default", pipe.components.scheduler)
    exact.set_timesteps(pipe.defaults.steps)
    subset = exact.timesteps[:: round(1 / fraction)].tolist()
    return [int(t) for t in subset] if len(subset) == steps else None


# --- controls --------------------------------------------------------------------------------------------------
def control_conditioners(pipe: Pipeline, request: GenerationRequest,
                         place: Callable[[Image.Image], Image.Image] | None = None) -> list[ControlNetConditioner]:
    """One conditioner per control: its ControlNet (loaded once by the pipeline) and its map, resized to the
    output size in [0, 1]."""
    if not request.controls:
        return []
    processor = VaeImageProcessor(vae_scale_factor=pipe.vae_scale_factor, do_convert_rgb=True, do_normalize=False)
    maps = control_maps(pipe, request, place)
    return [ControlNetConditioner(pipe.controlnets.model(c.type, c.controlnet),
                                  processor.preprocess(m, height=request.height, width=request.width),
                                  scale=c.scale, start=c.start, end=c.end)
            for c, m in zip(request.controls, maps)]


def control_maps(pipe: Pipeline, request: GenerationRequest,
                 place: Callable[[Image.Image], Image.Image] | None = None) -> list[Image.Image]:
    """The control maps made from the controls' images (``place``: how the task puts them on its canvas)."""
    maps = []
    for control in request.controls:
        image = open_image(control.image, f"{control.type} control image")
        mapped = control_map(control.type, image, detect=control.detect, thresholds=tuple(control.thresholds),
                             annotator_dir=pipe.annotator_dir)
        maps.append(place(mapped) if place is not None else mapped)
    return maps
