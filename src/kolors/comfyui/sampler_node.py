"""The Kolors sampler: text-to-image, image-to-image and inpainting in one node, as one kolors request.

With no image or latent it draws from the prompt; with an ``image`` (IMAGE) it redraws it at ``strength``, and
with a ``mask`` too (MASK, white = redraw, e.g. from Load Image's alpha or the mask editor) it inpaints, pasting
the pixels outside the mask back exactly. A ``latent`` (LATENT, e.g. from a VAE Encode or another sampler) is
redrawn from those latents; its ``noise_mask`` (Set Latent Noise Mask) or a ``mask`` makes it inpainting. Every
image of an input batch is redrawn ``batch_size`` times; image i of a run uses seed + i, as ``kolors generate``.
"""

from __future__ import annotations

from typing import Any

from ..request import MAX_GUIDANCE, MAX_IMAGES, MAX_SEED, MAX_SIDE, MAX_STEPS
from ..schedulers import SCHEDULER_NAMES
from .objects import CONDITIONING, MODEL, KolorsConditioning, KolorsModel


def check_size(width: int, height: int) -> bool | str:
    """ComfyUI's input check for the output size: True, or our one-line message."""
    from ..errors import KolorsError
    from ..request import GenerationRequest

    try:
        GenerationRequest("", width=width or None, height=height or None).validate()
    except KolorsError as exc:
        return str(exc)
    return True


class KolorsSampler:
    """Text-to-image, image-to-image and inpainting with a Kolors model."""

    CATEGORY = "Kolors/sampling"
    RETURN_TYPES = ("IMAGE", "LATENT")
    RETURN_NAMES = ("image", "latent")
    OUTPUT_TOOLTIPS = ("the finished images (inpainting: the pixels outside the mask kept exactly)",
                       "the denoised latents, for another sampler or a VAE Decode")
    FUNCTION = "sample"
    DESCRIPTION = ("Generates with a Kolors model: from the prompt alone, or redrawing an image or latent "
                   "(strength), or inpainting with a mask. Progress shows on ComfyUI's bar; Cancel stops it "
                   "after the current step.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        side = {"default": 0, "min": 0, "max": MAX_SIDE, "step": 8}
        return {
            "required": {
                "model": (MODEL, {}),
                "positive": (CONDITIONING, {"tooltip": "the prompt (with its ControlNets and size conditioning)"}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "the seed of the first image; image i uses seed + i"}),
                "steps": ("INT", {"default": 0, "min": 0, "max": MAX_STEPS,
                                  "tooltip": "denoising steps; 0: the model's default (50 for Kolors, 25 for the "
                                             "built-in model, fewer in fast mode)"}),
                "guidance": ("FLOAT", {"default": 5.0, "min": 0.0, "max": MAX_GUIDANCE, "step": 0.1,
                                       "round": 0.01, "tooltip": "classifier-free guidance scale (1 or less: off)"}),
                "scheduler": (list(SCHEDULER_NAMES), {"default": "default",
                                                      "tooltip": "default: the model's own scheduler"}),
                "width": ("INT", {**side, "tooltip": "0: the model's size, or the input image's"}),
                "height": ("INT", {**side, "tooltip": "0: the model's size, or the input image's"}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": MAX_IMAGES,
                                       "tooltip": "images per prompt (per input image)"}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                       "tooltip": "with an image or latent: how much is redrawn (1: all)"}),
            },
            "optional": {
                "negative": (CONDITIONING, {"tooltip": "the negative prompt"}),
                "image": ("IMAGE", {"tooltip": "an image to redraw (image-to-image; inpainting with a mask)"}),
                "mask": ("MASK", {"tooltip": "what to redraw (white/1), with an image or latent"}),
                "latent": ("LATENT", {"tooltip": "latents to redraw instead of an image"}),
                "feather": ("INT", {"default": 0, "min": 0, "max": 1024,
                                    "tooltip": "inpainting: pixels over which the redrawn part blends in"}),
                "guidance_stop": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 1.0, "step": 0.05,
                                            "tooltip": "guide only this first share of the steps; -1: the model's "
                                                       "default (1, every step, for Kolors; 0.3 for the built-in "
                                                       "model)"}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width: int = 0, height: int = 0) -> bool | str:
        return check_size(width, height)

    def sample(self, model: KolorsModel, positive: KolorsConditioning, seed: int, steps: int, guidance: float,
               scheduler: str, width: int, height: int, batch_size: int, strength: float,
               negative: KolorsConditioning | None = None, image: Any = None, mask: Any = None,
               latent: dict | None = None, feather: int = 0, guidance_stop: float = -1.0) -> tuple[Any, dict]:
        import torch

        from ..request import GenerationRequest
        from . import tensors
        from .progress import ComfyProgress

        pipe = model.pipe
        common = {**positive.request_fields(), **model.request_fields(),
                  "negative_prompt": negative.text if negative is not None else None,
                  "width": width or None, "height": height or None, "steps": steps or None, "guidance": guidance,
                  "guidance_stop": guidance_stop if guidance_stop >= 0 else None, "scheduler": scheduler,
                  "num_images": batch_size}
        inputs = self._inputs(pipe, image, mask, latent, strength, feather)
        progress = ComfyProgress(pipe, runs=len(inputs))
        results = []
        for run, fields in enumerate(inputs):
            progress.run = run
            request = GenerationRequest(**common, seed=seed + run * batch_size, **fields)
            results.append(pipe.generate(request, progress=False, on_step=progress))
        return (tensors.from_pixels([r.pixels for r in results]),
                tensors.to_latent(pipe, torch.cat([r.latents for r in results])))

    @staticmethod
    def _inputs(pipe: Any, image: Any, mask: Any, latent: dict | None, strength: float,
                feather: int) -> list[dict[str, Any]]:
        """The request fields of each run: one per input image (or latent); one text-to-image run without."""
        from ..errors import InvalidParameterError
        from . import tensors

        if image is not None and latent is not None:
            raise InvalidParameterError("connect the sampler's image or its latent input, not both")
        if image is None and latent is None:
            if mask is not None:
                raise InvalidParameterError("a mask goes with an image or latent input: connect the image to redraw")
            return [{}]
        runs = []
        count = tensors.image_count(image) if image is not None else latent["samples"].shape[0]
        for i in range(count):
            fields: dict[str, Any] = {"strength": strength}
            if image is not None:
                fields["init_image"] = tensors.to_pil(image, i)
            else:
                fields["init_latents"] = tensors.from_latent(pipe, latent, i)  # and the pixels they encode:
                decoded = pipe.decode(fields["init_latents"].to(pipe.device))  # the size, the kept pixels
                fields["init_image"] = tensors.to_pil(tensors.from_pixels(decoded))
            picture = fields["init_image"]
            region = tensors.mask_to_pil(mask, i) if mask is not None else \
                tensors.latent_noise_mask(latent, i, picture.size) if latent is not None else None
            if region is not None:
                fields.update(mask=region, resize_mask=True, feather=feather)
            runs.append(fields)
        return runs
