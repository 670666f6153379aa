"""One loaded Kolors model that serves any :class:`~kolors.request.GenerationRequest`.

```python
pipe = Pipeline.from_pretrained("Kolors-diffusers")          # or load_pipeline(); None: the built-in model
result = pipe.generate(GenerationRequest("一只红色的圆", seed=42))
result = pipe("一只红色的圆", seed=42)                          # the same, from keyword arguments
```

The pipeline owns its adapters: the LoRAs, ControlNets and IP-Adapters that requests name are loaded once,
kept (a bounded number of each) and applied for exactly the requests that name them; the base model is exactly
itself again between requests. A generation reads top to bottom in :meth:`Pipeline.generate_batch`: resolve the
request's defaults, plan the task, apply its adapters, encode the prompts, denoise each batch, decode, finish.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .. import defaults as kolors_defaults
from ..adapters.controlnet import ControlNetSet
from ..adapters.image_prompts import ImagePromptSet
from ..adapters.lora import LoraSet
from ..devices import dtype_name, move, resolve_device, resolve_dtype
from ..diffusion.denoise import denoise
from ..diffusion.pag import PerturbedAttention
from ..diffusion.prompt import PromptEmbeddings, encode_prompts
from ..errors import InvalidParameterError, KolorsError
from ..images import check_image_input
from ..loading import KolorsComponents, load_components, locate_model
from ..performance import RunSettings, prepare_components, settings_for
from ..performance.cpu import compute_dtype, compute_in_float32
from ..performance.offload import Placement
from ..request import IMAGE_TO_IMAGE, INPAINT, OUTPAINT, TEXT_TO_IMAGE, GenerationRequest
from ..schedulers import make_scheduler
from ..version import __version__
from . import tasks
from .inpainting import CANVAS_MULTIPLE
from .preview import LatentPreview

logger = logging.getLogger(__name__)

PROMPT_CACHE_SIZE = 32
PREVIEW_DECODE_PIXELS = 256 * 256  # previews of images up to this size are decoded (cheap), larger ones mapped


@dataclass(frozen=True)
class GenerationDefaults:
    """Settings used when a request gives none: from the folder's kolors_defaults.json, else the Kolors ones."""

    width: int
    height: int
    steps: int
    guidance: float
    guidance_stop: float = 1.0  # the share of the steps that are guided (see GenerationRequest.guidance_stop)
    img2img_strength: float = kolors_defaults.IMG2IMG_STRENGTH
    outpaint_feather: int = kolors_defaults.OUTPAINT_FEATHER


@dataclass
class GenerationResult:
    """Generated images, the seed of each, and the parameters that reproduce each one."""

    images: list[Image.Image]
    seeds: list[int]
    parameters: list[dict[str, Any]]
    pixels: np.ndarray = field(repr=False)  # (N, H, W, 3) float32 in [0, 1], before 8-bit quantisation
    # (N, C, h, w) float32 on the CPU: the denoised latents, scaled as the UNet sees them (before decoding and
    # before a task's finishing touches such as inpainting's pasted pixels); Pipeline.decode turns them into pixels
    latents: torch.Tensor | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StepInfo:
    """Progress of a generation, passed to ``on_step`` after every denoising step; ``on_step`` may raise (e.g.
    :class:`~kolors.errors.GenerationCancelled`) to stop the generation there."""

    step: int  # steps done in this batch
    steps: int  # steps this batch runs
    batch: int  # index of the batch (a generation of N images runs ceil(N / batch_size) batches)
    batches: int
    latents: torch.Tensor  # the batch's current latents (decode a preview with Pipeline.preview)
    seeds: tuple[int, ...]  # the seed of each image in the batch

    @property
    def fraction(self) -> float:
        """How much of the whole generation is done, in [0, 1]."""
        return (self.batch + self.step / self.steps) / self.batches if self.steps else 1.0


class Pipeline:
    """A loaded Kolors model that turns generation requests into images."""

    def __init__(self, components: KolorsComponents, *, device: torch.device, dtype: torch.dtype,
                 model_name: str, settings: RunSettings | None = None, weight_dtype: torch.dtype | None = None,
                 annotator_dir: str | os.PathLike | None = None) -> None:
        self.components = components
        self.device = device
        self.dtype = dtype  # what the denoising loop computes in
        self.weight_dtype = weight_dtype or dtype  # what the weights were loaded as (the user's dtype)
        self.model_name = model_name
        self.settings = settings or settings_for("exact")
        self.placement = Placement(device, offload=self.settings.weights_on_cpu)
        self.annotator_dir = Path(annotator_dir) if annotator_dir is not None else None
        self.vae_scale_factor = 2 ** (len(components.vae.config.block_out_channels) - 1)
        d = components.defaults
        native = components.unet.config.sample_size * self.vae_scale_factor
        self.defaults = GenerationDefaults(
            width=int(d.get("width", native)), height=int(d.get("height", native)),
            steps=int(d.get("steps", kolors_defaults.STEPS)),
            guidance=float(d.get("guidance", kolors_defaults.GUIDANCE)),
            guidance_stop=float(d.get("guidance_stop", 1.0)),
            img2img_strength=float(d.get("img2img_strength", kolors_defaults.IMG2IMG_STRENGTH)),
            outpaint_feather=int(d.get("outpaint_feather", kolors_defaults.OUTPAINT_FEATHER)),
        )
        # The adapters this pipeline owns, loaded on first use and kept (a bounded number of each).
        self.loras = LoraSet(components)
        self.controlnets = ControlNetSet(self)
        self.image_prompts = ImagePromptSet(self)
        self._prompts: OrderedDict[tuple, PromptEmbeddings] = OrderedDict()
        self._preview: LatentPreview | None = None
        self._unet_prepared = False

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike | None = None,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        unet_file: str | os.PathLike | None = None,
        text_encoder_file: str | os.PathLike | None = None,
        vae_file: str | os.PathLike | None = None,
        offload: bool = False,
        mode: str = "exact",
        text_encoder_quant: str | None = None,
        compile: bool | None = None,
        controlnets: dict[str, str | os.PathLike] | None = None,
        annotator_dir: str | os.PathLike | None = None,
    ) -> Pipeline:
        """Load a Kolors model folder (or Hub id in the local cache; None: $KOLORS_MODEL, else the built-in model).

        ``mode`` is one of ``kolors.performance.MODES`` (exact, fast, low-memory, sequential; see
        docs/performance.md). ``offload`` keeps the weights in CPU memory and moves each component to the GPU
        only while it runs; ``text_encoder_quant`` ("none", "int8", "int4") and ``compile`` override the mode's.
        ``unet_file``, ``text_encoder_file``, ``vae_file``: single weight files replacing the folder's (whose
        configs and tokenizer are still read). ``controlnets``: ControlNet folders by control type (e.g.
        ``{"canny": "Kolors-ControlNet-Canny"}``), used by controls that name no folder; ``annotator_dir``: the
        depth/pose annotators' weights.
        """
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        settings = settings_for(mode, offload="model" if offload and mode == "exact" else None,
                                text_encoder_quant=text_encoder_quant, compile=compile)
        folder = locate_model(model)
        for f in (unet_file, text_encoder_file, vae_file):
            if f is not None and not Path(f).is_file():
                raise KolorsError(f"weight file not found: {f}")
        load_device = torch.device("cpu") if settings.weights_on_cpu else torch_device
        with friendly_oom("loading the model"):
            components = load_components(
                folder, device=load_device, dtype=torch_dtype,
                unet_file=Path(unet_file) if unet_file else None,
                text_encoder_file=Path(text_encoder_file) if text_encoder_file else None,
                vae_file=Path(vae_file) if vae_file else None,
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
        pipe = cls(components, device=torch_device, dtype=run_dtype, model_name=name, settings=settings,
                   weight_dtype=torch_dtype, annotator_dir=annotator_dir)
        for kind, controlnet in (controlnets or {}).items():
            pipe.add_controlnet(kind, controlnet)
        return pipe

    # --- what the model is ------------------------------------------------------------------------------------
    @property
    def is_builtin(self) -> bool:
        """Whether this is the small model shipped inside the package."""
        from ..loading import EMBEDDED_MODEL_DIR

        return self.components.folder.resolve() == EMBEDDED_MODEL_DIR.resolve()

    @property
    def inpainting_unet(self) -> bool:
        """Whether the UNet is an inpainting UNet (latents + mask + masked-image latents as inputs)."""
        return self.components.unet.config.in_channels == 2 * self.latent_channels + 1

    @property
    def latent_channels(self) -> int:
        return self.components.vae.config.latent_channels

    @property
    def offload(self) -> bool:
        """Whether weights live in CPU memory between uses (adapters loaded later are kept there too)."""
        return self.settings.weights_on_cpu

    def run_settings(self, request: GenerationRequest) -> RunSettings:
        """The run settings for ``request``: the loaded mode's, or those of the mode the request names when that
        mode's load-time levers (quantisation, offload, tiling, compile, fp8) are the ones loaded."""
        if request.mode is None or request.mode == self.settings.mode:
            return self.settings
        asked = settings_for(request.mode)
        fixed = ("offload", "text_encoder_quant", "vae_tiling")
        if any(getattr(asked, f) != getattr(self.settings, f) for f in fixed) or (
                self.device.type == "cuda" and (asked.compile, asked.fp8) != (self.settings.compile,
                                                                              self.settings.fp8)):
            raise InvalidParameterError(f"mode '{request.mode}' needs the model loaded in that mode (this one is "
                                        f"loaded in '{self.settings.mode}' mode): load it with mode='{request.mode}'")
        return replace(asked, offload=self.settings.offload, text_encoder_quant=self.settings.text_encoder_quant)

    # --- requests ---------------------------------------------------------------------------------------------
    def __call__(self, prompt: str, negative_prompt: str | None = None, *, progress: bool | None = None,
                 on_step: Callable[[StepInfo], None] | None = None, **fields: Any) -> GenerationResult:
        """Generate from keyword arguments: the fields of :class:`~kolors.request.GenerationRequest`."""
        try:
            request = GenerationRequest(prompt, negative_prompt, **fields)
        except TypeError as exc:
            raise InvalidParameterError(str(exc).replace("GenerationRequest.__init__()", "generation")) from None
        return self.generate(request, progress=progress, on_step=on_step)

    def resolve(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` checked, with every default filled in: what the images are made with and record.

        Image i of the result is made with seed ``seed + i``; a missing seed is drawn at random here.
        """
        request = request.replace().validate()
        task = request.resolved_task
        if self.inpainting_unet and task not in (INPAINT, OUTPAINT):
            raise KolorsError("this is an inpainting model (its UNet takes the mask as input): use the inpaint or "
                              "outpaint task (`kolors inpaint` / `kolors outpaint`)")
        settings = self.run_settings(request)
        changes: dict[str, Any] = {"task": task, "mode": request.mode or self.settings.mode}
        width, height = self._output_size(request, task)
        changes.update(width=width, height=height)
        inpainting_defaults = self.inpainting_unet and task in (INPAINT, OUTPAINT)
        if request.steps is None:
            changes["steps"] = kolors_defaults.INPAINT_STEPS if inpainting_defaults else \
                settings.default_steps(self.defaults.steps)
        if request.guidance is None:
            changes["guidance"] = (kolors_defaults.INPAINT_GUIDANCE if inpainting_defaults else
                                   kolors_defaults.CONTROL_GUIDANCE if request.controls else self.defaults.guidance)
        if request.guidance_stop is None:
            changes["guidance_stop"] = self.defaults.guidance_stop
        changes["scheduler"] = request.scheduler or settings.scheduler or "default"
        if request.seed is None:
            changes["seed"] = random.randrange(2**32)
        if task != TEXT_TO_IMAGE and request.strength is None:
            changes["strength"] = (kolors_defaults.INPAINT_STRENGTH if task in (INPAINT, OUTPAINT) else
                                   kolors_defaults.CONTROL_IMG2IMG_STRENGTH if request.controls else
                                   self.defaults.img2img_strength)
        if task in (INPAINT, OUTPAINT) and request.feather is None:
            changes["feather"] = self.defaults.outpaint_feather if task == OUTPAINT else 0
        if task == OUTPAINT:
            changes["extend"] = self._grown_extend(request)
        if request.pag_scale and request.pag_layers is None:
            changes["pag_layers"] = kolors_defaults.PAG_LAYERS
        if request.loras is None:
            changes["loras"] = self.loras.attached()
        micro = self._micro_conditioning(request, task, width, height)
        changes.update(micro)
        resolved = request.replace(**changes)
        for control in resolved.controls:
            control.controlnet = self.controlnets.folder(control.type, control.controlnet)
        return resolved

    def _output_size(self, request: GenerationRequest, task: str) -> tuple[int, int]:
        if task == TEXT_TO_IMAGE:
            size = (self.defaults.width, self.defaults.height)
            if request.controls and request.width is None and request.height is None:
                size = check_image_input(request.controls[0].image, "control image") or size
                size = tuple(max(8, side // 8 * 8) for side in size)
        elif task == IMAGE_TO_IMAGE:
            size = tuple(max(8, side // 8 * 8) for side in check_image_input(request.init_image, "image"))
        elif task == INPAINT:
            size = tuple(-(-side // CANVAS_MULTIPLE) * CANVAS_MULTIPLE
                         for side in check_image_input(request.init_image, "image"))
        else:
            w, h = check_image_input(request.init_image, "image")
            left, top, right, bottom = self._grown_extend(request)
            size = (w + left + right, h + top + bottom)
        width = request.width if request.width is not None else size[0]
        height = request.height if request.height is not None else size[1]
        return width, height

    @staticmethod
    def _grown_extend(request: GenerationRequest) -> tuple[int, int, int, int]:
        """The outpainting extension with right/bottom grown so that the canvas sides are multiples of 8."""
        w, h = check_image_input(request.init_image, "image")
        left, top, right, bottom = request.extend
        right += -(w + left + right) % CANVAS_MULTIPLE
        bottom += -(h + top + bottom) % CANVAS_MULTIPLE
        return left, top, right, bottom

    def _micro_conditioning(self, request: GenerationRequest, task: str, width: int, height: int) -> dict[str, Any]:
        """SDXL size conditioning: the output size, except plain image-to-image, which conditions on the asked
        size (else the model's default size) as diffusers' KolorsImg2ImgPipeline does while the output keeps the
        input's size (with controls: the output size, as diffusers' SDXL ControlNet image-to-image). Sizes equal
        to the output size are left out of the record."""
        asked = (request.height or self.defaults.height, request.width or self.defaults.width)
        default = asked if task == IMAGE_TO_IMAGE and not request.controls else (height, width)
        out = {}
        for key in ("original_size", "target_size"):
            value = tuple(getattr(request, key) or default)
            out[key] = None if value == (height, width) else value
        return out

    # --- generation, top to bottom ----------------------------------------------------------------------------
    def generate(self, request: GenerationRequest, *, progress: bool | None = None,
                 on_step: Callable[[StepInfo], None] | None = None) -> GenerationResult:
        """The images ``request`` asks for (see :meth:`generate_batch`)."""
        return self.generate_batch([request], progress=progress, on_step=on_step)[0]

    def generate_batch(self, requests: Sequence[GenerationRequest], *, progress: bool | None = None,
                       on_step: Callable[[StepInfo], None] | None = None) -> list[GenerationResult]:
        """The images of several requests that differ only in prompts, seeds and image counts
        (equal :meth:`GenerationRequest.batch_key`), denoised together; one result per request.

        Image i of a request is the image a single-image request with its seed + i gives, up to the rounding of
        batched matrix products (a few pixels ±1/255 on CPUs).
        """
        resolved = [self.resolve(r) for r in requests]
        first = resolved[0]
        if any(r.batch_key() != first.batch_key() for r in resolved[1:]):
            raise ValueError("generate_batch takes requests that differ only in prompts, seeds and image counts")
        rows = [(r, r.seed + i) for r in resolved for i in range(r.num_images)]
        batch_size = first.batch_size or len(rows)
        chunks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
        plan = tasks.plan(self, first)

        with friendly_oom(f"generating {first.width}x{first.height}"), self.loras.applied(first.loras), \
                self.image_prompts.applied(first) as image_prompts:
            conditioners = [*plan.conditioners, *image_prompts]
            guidance = first.guidance if first.guidance > 1.0 else None
            if first.pag_scale:
                conditioners.append(PerturbedAttention(first.pag_scale, first.pag_layers, cfg=guidance is not None))
            embeddings = self._embeddings([(r.prompt, r.negative_prompt) for r, _ in rows], guidance is not None)
            bar = tqdm(total=first.steps * len(chunks), desc="denoising", unit="step",
                       disable=(None if progress is None else not progress), leave=False)
            with bar:
                latents = []
                for index, chunk in enumerate(chunks):
                    start = sum(len(c) for c in chunks[:index])
                    latents.append(self._denoise(first, plan, chunk, embeddings[start : start + len(chunk)],
                                                 guidance, conditioners, bar, index, len(chunks), on_step))
            final = torch.cat(latents)
            pixels = plan.finish(self.decode(final))
        return self._results(resolved, rows, pixels, final.float().cpu())

    def _denoise(self, request: GenerationRequest, plan: tasks.TaskPlan, rows: list[tuple[GenerationRequest, int]],
                 embeddings: list[tuple[PromptEmbeddings, PromptEmbeddings | None]], guidance: float | None,
                 conditioners: list, bar: tqdm, index: int, batches: int,
                 on_step: Callable[[StepInfo], None] | None) -> torch.Tensor:
        """One batch: its first latents from the task, then the loop."""
        seeds = tuple(seed for _, seed in rows)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        scheduler = make_scheduler(request.scheduler, self.components.scheduler)
        latents, timesteps = plan.start(scheduler, generators, request.steps)
        if len(timesteps) != request.steps:  # image-to-image runs only the tail of the schedule
            bar.total = bar.total - request.steps + len(timesteps)
            bar.refresh()
        context, added = self._text_conditioning(request, embeddings)

        def step(done: int, total: int, current: torch.Tensor) -> None:
            bar.update()
            if on_step is not None:
                on_step(StepInfo(done, total, index, batches, current, seeds))

        self._prepare_unet()
        unet = self.components.unet
        modules = [m for h in conditioners for m in h.modules()]
        with self.placement.using(*modules, unet), contextlib.ExitStack() as stack:
            for h in conditioners:
                stack.enter_context(h.attached(unet))
            return denoise(unet, scheduler, latents, timesteps, context, added, guidance=guidance,
                           guidance_stop=request.guidance_stop, conditioners=conditioners, generators=generators,
                           on_step=step)

    def _text_conditioning(self, request: GenerationRequest,
                           embeddings: list[tuple[PromptEmbeddings, PromptEmbeddings | None]]
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The UNet's text tokens and added conditioning per row: ``[uncond…, cond…]`` with guidance."""
        parts = [cond for cond, _ in embeddings]
        if embeddings[0][1] is not None:
            parts = [uncond for _, uncond in embeddings] + parts
        embeds = PromptEmbeddings.cat(parts)
        micro = (request.original_size or (request.height, request.width), request.crop_coords,
                 request.target_size or (request.height, request.width))
        time_ids = torch.tensor([sum((tuple(m) for m in micro), ())], dtype=embeds.tokens.dtype, device=self.device)
        added = {"text_embeds": embeds.pooled.to(self.device),
                 "time_ids": time_ids.repeat(embeds.tokens.shape[0], 1)}
        return embeds.tokens.to(self.device), added

    def _results(self, resolved: list[GenerationRequest], rows: list[tuple[GenerationRequest, int]],
                 pixels: np.ndarray, latents: torch.Tensor) -> list[GenerationResult]:
        images = [Image.fromarray((p * 255).round().astype(np.uint8)) for p in pixels]
        results, offset = [], 0
        for request in resolved:
            n = request.num_images
            seeds = [request.seed + i for i in range(n)]
            params = [self.parameters(request, seed) for seed in seeds]
            results.append(GenerationResult(images[offset : offset + n], seeds, params, pixels[offset : offset + n],
                                            latents[offset : offset + n]))
            offset += n
        return results

    def parameters(self, request: GenerationRequest, seed: int) -> dict[str, Any]:
        """What one image records (a PNG's ``kolors`` chunk): its request and where it was made."""
        record = request.replace(seed=seed, num_images=1, batch_size=None).to_dict()
        if request.mode == "exact":
            record.pop("mode", None)
        record.update(self.loras.records(request.loras))
        record.update(self.image_prompts.records(request))
        record.update({k: v for k, v in self.settings.parameters().items() if k != "mode"})
        record.update(model=self.model_name, device=self.device.type, dtype=dtype_name(self.weight_dtype),
                      kolors_version=__version__)
        return record

    # --- the model's parts, one operation each ----------------------------------------------------------------
    def _embeddings(self, prompts: list[tuple[str, str | None]], guidance: bool
                    ) -> list[tuple[PromptEmbeddings, PromptEmbeddings | None]]:
        """Conditional and (with guidance) unconditional embeddings per row."""
        with self.placement.using(self.components.text_encoder):
            return [self.encode_prompt(prompt, negative, guidance=guidance) for prompt, negative in prompts]

    def encode_prompt(self, prompt: str, negative_prompt: str | None = None, *, guidance: bool = True
                      ) -> tuple[PromptEmbeddings, PromptEmbeddings | None]:
        """Conditional and (with guidance) unconditional embeddings, as Kolors makes them: the negative prompt's,
        or zeros when there is none and the model says ``force_zeros_for_empty_prompt``."""
        with self.placement.using(self.components.text_encoder):
            cond = self._encode(prompt)
            if not guidance:
                return cond, None
            if negative_prompt is None and self.components.force_zeros_for_empty_prompt:
                return cond, PromptEmbeddings(torch.zeros_like(cond.tokens), torch.zeros_like(cond.pooled))
            return cond, self._encode(negative_prompt or "", negative=True)

    def _encode(self, prompt: str, negative: bool = False) -> PromptEmbeddings:
        """One prompt's embeddings, from a small cache of recent prompts (per text-encoder LoRA state)."""
        key = (prompt, negative, self.loras.text_encoder_state())
        if key in self._prompts:
            self._prompts.move_to_end(key)
            return self._prompts[key]
        c = self.components
        embeddings = encode_prompts(c.tokenizer, c.text_encoder, [prompt], device=self.device,
                                    what="negative prompt" if negative else "prompt")
        self._prompts[key] = embeddings
        while len(self._prompts) > PROMPT_CACHE_SIZE:
            self._prompts.popitem(last=False)
        return embeddings

    def initial_noise(self, generators: list[torch.Generator], height: int, width: int) -> torch.Tensor:
        """Gaussian latents for an image of ``height``×``width`` pixels, drawn on the CPU from one generator per
        image (diffusers' convention), on the device."""
        shape = (1, self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        return torch.cat([torch.randn(shape, generator=g, dtype=self.dtype) for g in generators]).to(self.device)

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """Scaled VAE latents of ``pixels`` (1, 3, H, W) in [-1, 1], one posterior sample per generator."""
        vae = self.components.vae
        upcast = vae.config.force_upcast
        with self.placement.using(vae):
            if upcast:
                move(vae, torch.float32)
            try:
                x = pixels.to(self.device, torch.float32 if upcast else self.dtype)
                samples = [vae.encode(x).latent_dist.sample(generator=g) for g in generators]
            finally:
                if upcast:
                    move(vae, self.dtype)
        return torch.cat(samples).to(self.dtype) * vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Images in [0, 1] (N, H, W, 3) from latents; fp16 VAEs are upcast when their config asks for it."""
        vae = self.components.vae
        upcast = vae.dtype == torch.float16 and vae.config.force_upcast
        with self.placement.using(vae):
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

    def preview(self, latents: torch.Tensor) -> list[Image.Image]:
        """Small RGB previews of latents (one image per row): decoded when the images are small (up to
        PREVIEW_DECODE_PIXELS, e.g. the built-in model's), else a linear map from latents to colours fitted to this
        model's VAE once (at the latent resolution, no decoding: a fraction of a step's cost)."""
        if latents.shape[-1] * latents.shape[-2] * self.vae_scale_factor**2 <= PREVIEW_DECODE_PIXELS:
            return [Image.fromarray((p * 255).round().astype(np.uint8)) for p in self.decode(latents)]
        if self._preview is None:
            self._preview = LatentPreview.fit(self)
        return self._preview(latents)

    def add_controlnet(self, kind: str, controlnet: Any) -> Any:
        """Use ``controlnet`` (a folder, Hub id in the local cache, or a loaded ControlNetModel) for controls of
        ``kind`` that name no folder."""
        return self.controlnets.register(kind, controlnet)

    def _prepare_unet(self) -> None:
        """The first time the UNet runs: the mode's exact CUDA speed-ups."""
        if self._unet_prepared:
            return
        self._unet_prepared = True
        if self.settings.compile and not self.settings.weights_on_cpu:
            from ..performance.compile import speed_up_unet

            speed_up_unet(self.components.unet, self.device)


@contextlib.contextmanager
def friendly_oom(what: str) -> Iterator[None]:
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
