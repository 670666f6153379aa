"""Text-to-image generation with a Kolors model: encode, sample latents, denoise, decode."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from tqdm.auto import tqdm

from ..devices import dtype_name, move, resolve_device, resolve_dtype
from ..errors import InvalidParameterError, KolorsError
from ..loading import KolorsComponents, load_components, locate_model
from ..performance import RunSettings, prepare_components, settings_for
from ..performance.cpu import compute_dtype, compute_in_float32
from ..schedulers import SCHEDULER_NAMES, make_scheduler
from .conditioning import Conditioner, merge_unet_kwargs
from .pag import PerturbedAttention, pag_settings, perturbed_self_attention, with_perturbed_rows
from .prompt import PromptEmbeddings, encode_prompts

logger = logging.getLogger(__name__)

MAX_SIDE = 4096
MAX_STEPS = 1000
MAX_IMAGES = 256
FALLBACK_STEPS = 50  # the official Kolors scripts' defaults, used when a model folder declares none
FALLBACK_GUIDANCE = 5.0

# (scheduler, one CPU generator per image, steps) -> (first latents on the device, timesteps to run)
StartFn = Callable[[SchedulerMixin, list[torch.Generator], int], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class GenerationDefaults:
    """Settings used when the caller gives none: from the folder's kolors_defaults.json, else the Kolors ones."""

    width: int
    height: int
    steps: int
    guidance: float


@dataclass
class GenerationResult:
    """Generated images, the seed of each, and the parameters that reproduce each one."""

    images: list[Image.Image]
    seeds: list[int]
    parameters: list[dict[str, Any]]
    pixels: np.ndarray = field(repr=False)  # (N, H, W, 3) float32 in [0, 1], before 8-bit quantisation


class Text2ImagePipeline:
    """A loaded Kolors model that turns prompts into images."""

    def __init__(self, components: KolorsComponents, *, device: torch.device, dtype: torch.dtype,
                 model_name: str, offload: bool = False, settings: RunSettings | None = None,
                 weight_dtype: torch.dtype | None = None) -> None:
        self.components = components
        self.device = device
        self.dtype = dtype  # what the denoising loop computes in
        self.weight_dtype = weight_dtype or dtype  # what the weights were loaded as (the user's --dtype)
        self.model_name = model_name
        self.settings = settings or settings_for("exact", offload="model" if offload else None)
        self.offload = self.settings.weights_on_cpu  # adapters loaded later keep their weights on the CPU too
        self._unet_prepared = False
        vae_blocks = len(components.vae.config.block_out_channels)
        self.vae_scale_factor = 2 ** (vae_blocks - 1)
        d = components.defaults
        native = components.unet.config.sample_size * self.vae_scale_factor
        self.defaults = GenerationDefaults(
            width=int(d.get("width", native)),
            height=int(d.get("height", native)),
            steps=int(d.get("steps", FALLBACK_STEPS)),
            guidance=float(d.get("guidance", FALLBACK_GUIDANCE)),
        )

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike | None = None,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        unet_file: str | os.PathLike | None = None,
        text_encoder_file: str | os.PathLike | None = None,
        offload: bool = False,
        mode: str = "exact",
        text_encoder_quant: str | None = None,
        compile: bool | None = None,
    ) -> Text2ImagePipeline:
        """Load a Kolors model folder (or Hub id in the local cache; None: $KOLORS_MODEL, else the built-in model).

        ``mode`` is one of ``kolors.performance.MODES`` (exact, fast, low-memory, sequential; see
        docs/performance.md). ``offload`` keeps the weights in CPU memory and moves each component to the GPU
        only while it runs; ``text_encoder_quant`` ("none", "int8", "int4") and ``compile`` override the mode's.
        """
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        settings = settings_for(mode, offload="model" if offload and mode == "exact" else None,
                                text_encoder_quant=text_encoder_quant, compile=compile)
        folder = locate_model(model)
        for f in (unet_file, text_encoder_file):
            if f is not None and not Path(f).is_file():
                raise KolorsError(f"weight file not found: {f}")
        load_device = torch.device("cpu") if settings.weights_on_cpu else torch_device
        with _friendly_oom("loading the model"):
            components = load_components(
                folder, device=load_device, dtype=torch_dtype,
                unet_file=Path(unet_file) if unet_file else None,
                text_encoder_file=Path(text_encoder_file) if text_encoder_file else None,
                text_encoder_head=False,
            )
            applied = prepare_components(components, settings, torch_device)
            run_dtype = compute_dtype(torch_device, torch_dtype)
            if run_dtype != torch_dtype:
                compute_in_float32(components, torch_dtype, skip_text_encoder=settings.text_encoder_quant != "none")
                applied.append(f"{dtype_name(torch_dtype)} weights computed in float32 layer by layer "
                               f"(this CPU has no {dtype_name(torch_dtype)} matmul instructions)")
        if applied:
            logger.info("%s mode: %s", settings.mode, ", ".join(applied))
        name = str(model) if model is not None else os.environ.get("KOLORS_MODEL") or "built-in"
        return cls(components, device=torch_device, dtype=run_dtype, model_name=name, settings=settings,
                   weight_dtype=torch_dtype)

    @property
    def is_builtin(self) -> bool:
        """Whether this is the small model shipped inside the package."""
        from ..loading import EMBEDDED_MODEL_DIR

        return self.components.folder.resolve() == EMBEDDED_MODEL_DIR.resolve()

    def __call__(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        *,
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
        """Generate ``num_images`` images of ``prompt`` with seeds ``seed``, ``seed+1``, … (random when None).

        Image i is the image a single-image call with ``seed + i`` gives, however the batch is split.
        Sizes are ``(height, width)`` pairs for SDXL micro-conditioning, defaulting to the output size.
        ``pag_scale`` > 0 adds perturbed-attention guidance on ``pag_layers`` (default "mid").
        """
        width = self.defaults.width if width is None else width
        height = self.defaults.height if height is None else height
        return self._generate(
            prompt, negative_prompt, width=width, height=height, steps=steps, guidance=guidance, seed=seed,
            num_images=num_images, scheduler=scheduler, batch_size=batch_size, original_size=original_size,
            target_size=target_size, crop_coords=crop_coords, progress=progress,
            start=functools.partial(self._start_from_noise, width=width, height=height), extra={},
            pag=pag_settings(pag_scale, pag_layers),
        )

    def _generate(self, prompt: str, negative_prompt: str | None, *, width: int, height: int, steps: int | None,
                  guidance: float | None, seed: int | None, num_images: int, scheduler: str | None,
                  batch_size: int | None, original_size: tuple[int, int] | None,
                  target_size: tuple[int, int] | None, crop_coords: tuple[int, int], progress: bool | None,
                  start: StartFn, extra: dict[str, Any],
                  conditioners: Sequence[Conditioner] = (),
                  pag: PerturbedAttention | None = None) -> GenerationResult:
        """The shared generation procedure; ``start`` makes the first latents and the timesteps to run."""
        steps = self.settings.default_steps(self.defaults.steps) if steps is None else steps
        guidance = self.defaults.guidance if guidance is None else guidance
        scheduler = scheduler or self.settings.scheduler or "default"
        _validate(width, height, steps, guidance, num_images, scheduler, seed)
        if self.components.unet.config.in_channels == 9 and not any(getattr(h, "extra_channels", False)
                                                                     for h in conditioners):
            raise KolorsError("this is an inpainting model (its UNet takes 9 input channels): use `kolors inpaint` "
                              "/ `kolors outpaint` (InpaintPipeline)")
        if seed is None:
            seed = random.randrange(2**32)
        seeds = [seed + i for i in range(num_images)]
        batch_size = batch_size or num_images
        micro = (tuple(original_size or (height, width)), tuple(crop_coords), tuple(target_size or (height, width)))

        with _friendly_oom(f"generating {width}x{height}"):
            from ..adapters.ip_adapter import image_prompt_conditioners  # IP-Adapters loaded into this pipeline

            image_prompts, image_prompt_params = image_prompt_conditioners(self)
            conditioners, extra = [*conditioners, *image_prompts], {**extra, **image_prompt_params}
            cond, uncond = self._encode(prompt, negative_prompt, guidance)
            chunks = [seeds[i : i + batch_size] for i in range(0, num_images, batch_size)]
            bar = tqdm(total=steps * len(chunks), desc="denoising", unit="step",
                       disable=(None if progress is None else not progress), leave=False)
            with bar:
                latents = [self._denoise(cond, uncond, chunk, steps, guidance, scheduler, micro, start, bar,
                                         conditioners, pag=pag)
                           for chunk in chunks]
            pixels = self._decode(torch.cat(latents))

        images = [Image.fromarray((p * 255).round().astype(np.uint8)) for p in pixels]
        # SDXL micro-conditioning, recorded when it is not the default, so that the parameters reproduce the image
        # (image-to-image conditions on the model's default size while the output keeps the input's size).
        micro_params = {key: list(value) for key, value, default in zip(
            ("original_size", "crop_coords", "target_size"), micro, ((height, width), (0, 0), (height, width)))
            if tuple(value) != default}
        params = [
            {
                "prompt": prompt, "negative_prompt": negative_prompt, "width": width, "height": height,
                "steps": steps, "guidance": guidance, "seed": s, "scheduler": scheduler, **micro_params,
                **(pag.parameters() if pag else {}), **extra, **self.settings.parameters(),
                "model": self.model_name, "device": self.device.type, "dtype": dtype_name(self.weight_dtype),
                "kolors_version": _kolors_version(),
            }
            for s in seeds
        ]
        return GenerationResult(images=images, seeds=seeds, parameters=params, pixels=pixels)

    # -- the algorithm, step by step -------------------------------------------------------------

    def _encode(self, prompt: str, negative_prompt: str | None,
                guidance: float) -> tuple[PromptEmbeddings, PromptEmbeddings | None]:
        """Conditional and (with guidance) unconditional embeddings, as Kolors makes them."""
        c = self.components
        with self._on_device(c.text_encoder):
            cond = encode_prompts(c.tokenizer, c.text_encoder, [prompt], device=self.device)
            if guidance <= 1.0:
                return cond, None
            if negative_prompt is None and c.force_zeros_for_empty_prompt:
                return cond, PromptEmbeddings(torch.zeros_like(cond.tokens), torch.zeros_like(cond.pooled))
            uncond = encode_prompts(c.tokenizer, c.text_encoder, [negative_prompt or ""], device=self.device)
        return cond, uncond

    def _initial_latents(self, generators: list[torch.Generator], height: int, width: int) -> torch.Tensor:
        """Gaussian latents drawn on the CPU from one generator per image (diffusers' convention)."""
        shape = (1, self.components.unet.config.in_channels, height // self.vae_scale_factor,
                 width // self.vae_scale_factor)
        noise = [torch.randn(shape, generator=g, dtype=self.dtype) for g in generators]
        return torch.cat(noise).to(self.device)

    def _start_from_noise(self, scheduler: SchedulerMixin, generators: list[torch.Generator], steps: int, *,
                          width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pure-noise latents and the full timestep schedule (text-to-image)."""
        subset = self._fast_schedule(scheduler, steps)
        if subset is not None:
            scheduler.set_timesteps(timesteps=subset, device=self.device)
        else:
            scheduler.set_timesteps(steps, device=self.device)
        return self._initial_latents(generators, height, width) * scheduler.init_noise_sigma, scheduler.timesteps

    def _fast_schedule(self, scheduler: SchedulerMixin, steps: int) -> list[int] | None:
        """Fast mode at its default step count: every k-th timestep of exact mode's schedule (None otherwise).

        Starting from exact mode's first (noisiest) timestep keeps fast mode on exact mode's path: a schedule of
        its own starts at a lower noise level, and on the built-in model a quarter of the images then came out
        different (another background or shape; PSNR < 10 dB against exact mode) instead of none.
        """
        fraction = self.settings.step_fraction
        if fraction >= 1 or "timesteps" not in inspect.signature(scheduler.set_timesteps).parameters:
            return None
        exact = make_scheduler("default", self.components.scheduler)
        exact.set_timesteps(self.defaults.steps)
        subset = exact.timesteps[:: round(1 / fraction)].tolist()
        return [int(t) for t in subset] if len(subset) == steps else None

    @torch.no_grad()
    def _denoise(self, cond: PromptEmbeddings, uncond: PromptEmbeddings | None, seeds: list[int], steps: int,
                 guidance: float, scheduler_name: str, micro: tuple, start: StartFn, bar: tqdm,
                 conditioners: Sequence[Conditioner] = (), pag: PerturbedAttention | None = None) -> torch.Tensor:
        """Denoised latents for the images of ``seeds``, with classifier-free guidance when ``uncond`` is given
        and perturbed-attention guidance with ``pag`` (a third chunk repeating the conditional rows)."""
        c = self.components
        n = len(seeds)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        scheduler = make_scheduler(scheduler_name, c.scheduler)
        latents, timesteps = start(scheduler, generators, steps)
        if len(timesteps) != steps:  # image-to-image runs only the tail of the schedule
            bar.total = bar.total - steps + len(timesteps)
            bar.refresh()
        step_kwargs = _step_kwargs(scheduler, generators if n > 1 else generators[0])
        for h in conditioners:
            h.begin(scheduler, generators, latents, timesteps)

        embeds = cond.repeat(n) if uncond is None else PromptEmbeddings.cat([uncond.repeat(n), cond.repeat(n)])
        time_ids = torch.tensor([sum(micro, ())], dtype=embeds.tokens.dtype, device=self.device)
        time_ids = time_ids.repeat(embeds.tokens.shape[0], 1)
        added = {"text_embeds": embeds.pooled.to(self.device), "time_ids": time_ids}
        context = embeds.tokens.to(self.device)

        self._prepare_unet()
        with self._on_device(c.unet), perturbed_self_attention(c.unet, pag, cfg=uncond is not None):
            for i, t in enumerate(timesteps):
                model_in = latents if uncond is None else torch.cat([latents, latents])
                model_in = scheduler.scale_model_input(model_in, t)
                extra = merge_unet_kwargs(
                    [h.unet_kwargs(model_in, t, i / len(timesteps), context, added) for h in conditioners])
                unet_added = {**added, **extra.pop("added_cond_kwargs", {})}
                for h in conditioners:
                    model_in = h.model_input(model_in, t)
                unet_in = (model_in, context, unet_added, extra)
                if pag is not None:
                    unet_in = with_perturbed_rows(unet_in, model_in.shape[0], n)
                noise = c.unet(unet_in[0], t, encoder_hidden_states=unet_in[1], added_cond_kwargs=unet_in[2],
                               return_dict=False, **unet_in[3])[0]
                if pag is not None:
                    noise, noise_perturbed = noise[:-n], noise[-n:]
                noise_cond = noise[-n:]
                if uncond is not None:
                    noise = noise[:n] + guidance * (noise_cond - noise[:n])
                if pag is not None:
                    noise = noise + pag.scale * (noise_cond - noise_perturbed)
                latents = scheduler.step(noise, t, latents, **step_kwargs, return_dict=False)[0]
                next_t = timesteps[i + 1] if i + 1 < len(timesteps) else None
                for h in conditioners:
                    latents = h.after_step(latents, t, next_t)
                bar.update()
        return latents

    @torch.no_grad()
    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        """Images in [0, 1] (N, H, W, 3) from latents; fp16 VAEs are upcast when their config asks for it."""
        vae = self.components.vae
        upcast = vae.dtype == torch.float16 and vae.config.force_upcast
        with self._on_device(vae):
            if upcast:
                move(vae, torch.float32)
            try:
                latents = latents.to(vae.dtype) / vae.config.scaling_factor
                image = vae.decode(latents, return_dict=False)[0]
            finally:
                if upcast:
                    move(vae, torch.float16)
        image = (image / 2 + 0.5).clamp(0, 1)
        return image.float().permute(0, 2, 3, 1).cpu().numpy()

    def _prepare_unet(self) -> None:
        """The first time the UNet runs (adapters are in place by then): the mode's exact CUDA speed-ups."""
        if self._unet_prepared:
            return
        self._unet_prepared = True
        if self.settings.compile and not self.settings.weights_on_cpu:
            from ..performance.compile import speed_up_unet

            speed_up_unet(self.components.unet, self.device)

    @contextlib.contextmanager
    def _on_device(self, module: torch.nn.Module) -> Iterator[None]:
        """With offload, ``module`` lives on the compute device only inside this block (streamed modules move
        layer by layer by themselves)."""
        from ..performance.offload import is_streamed

        if not self.offload or self.device.type == "cpu" or is_streamed(module):
            yield
            return
        move(module, self.device)
        try:
            yield
        finally:
            move(module, "cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


def _kolors_version() -> str:
    from .. import __version__

    return __version__


def _step_kwargs(scheduler: Any, generator: torch.Generator | list[torch.Generator]) -> dict[str, Any]:
    """The ``generator``/``eta`` keywords this scheduler's ``step`` accepts."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "generator" in accepted:
        kwargs["generator"] = generator
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    return kwargs


def _validate(width: int, height: int, steps: int, guidance: float, num_images: int, scheduler: str,
              seed: int | None) -> None:
    for name, side in (("width", width), ("height", height)):
        if not isinstance(side, int) or side <= 0:
            raise InvalidParameterError(f"{name} must be a positive number of pixels, got {side}")
        if side % 8:
            raise InvalidParameterError(f"{name} {side} is not a multiple of 8: try {max(8, side // 8 * 8)}")
        if side > MAX_SIDE:
            raise InvalidParameterError(f"{name} {side} is larger than {MAX_SIDE} pixels: generate smaller and upscale")
    if not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise InvalidParameterError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
    if not 0 <= guidance <= 100:
        raise InvalidParameterError(f"guidance must be between 0 and 100, got {guidance}")
    if not isinstance(num_images, int) or not 1 <= num_images <= MAX_IMAGES:
        raise InvalidParameterError(f"num-images must be between 1 and {MAX_IMAGES}, got {num_images}")
    if scheduler not in SCHEDULER_NAMES:
        raise InvalidParameterError(f"unknown scheduler '{scheduler}': use one of {', '.join(SCHEDULER_NAMES)}")
    if seed is not None and not 0 <= seed < 2**63 - MAX_IMAGES:
        raise InvalidParameterError(f"seed must be a non-negative integer below 2**63, got {seed}")


@contextlib.contextmanager
def _friendly_oom(what: str) -> Iterator[None]:
    """Turn a GPU out-of-memory error into a one-line KolorsError with what to try."""
    try:
        yield
    except torch.OutOfMemoryError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise KolorsError(
            f"out of GPU memory while {what}: try --offload, fewer --num-images or --batch-size 1, "
            "a smaller size, or --device cpu"
        ) from None
