"""Kolors VAE Decode / Encode: between ComfyUI's LATENT and IMAGE with the Kolors model's own VAE.

They work for every Kolors model. The stock VAE Decode / Encode work too when the model's VAE is the SDXL VAE
(real Kolors), through the VAE that "Kolors VAE (for stock nodes)" gives; the built-in model's small VAE is not an
architecture ComfyUI's VAE loader knows, so it needs these nodes.
"""

from __future__ import annotations

from typing import Any

from .objects import MODEL, KolorsModel


class KolorsVAEDecode:
    """LATENT -> IMAGE with the Kolors model's VAE."""

    CATEGORY = "Kolors/latent"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "decode"
    DESCRIPTION = "Decodes latents into images with the Kolors model's own VAE (works for every Kolors model)."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": (MODEL, {}), "samples": ("LATENT", {})}}

    def decode(self, model: KolorsModel, samples: dict) -> tuple[Any]:
        from . import tensors

        pipe = model.pipe
        count = samples["samples"].shape[0]
        pixels = [pipe.decode(tensors.from_latent(pipe, samples, i).to(pipe.device)) for i in range(count)]
        return (tensors.from_pixels(pixels),)


class KolorsVAEEncode:
    """IMAGE -> LATENT with the Kolors model's VAE (sides cropped to multiples of 8, as the stock VAE Encode)."""

    CATEGORY = "Kolors/latent"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    FUNCTION = "encode"
    DESCRIPTION = "Encodes images into latents with the Kolors model's own VAE (works for every Kolors model)."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": (MODEL, {}), "pixels": ("IMAGE", {})}}

    def encode(self, model: KolorsModel, pixels: Any) -> tuple[dict]:
        import torch

        from . import tensors

        pipe = model.pipe
        f = pipe.vae_scale_factor
        height, width = pixels.shape[1] // f * f, pixels.shape[2] // f * f
        images = pixels[:, :height, :width, :3].permute(0, 3, 1, 2).float() * 2 - 1
        latents = [pipe.encode_pixels(images[i : i + 1], [torch.Generator().manual_seed(0)])
                   for i in range(images.shape[0])]
        return (tensors.to_latent(pipe, torch.cat(latents)),)
