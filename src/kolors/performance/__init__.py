"""Speed and memory: run modes and the levers behind them (quantisation, offload, compile, tiled decoding)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .modes import MODES, OFFLOADS, TEXT_ENCODER_QUANTS, RunSettings, settings_for

if TYPE_CHECKING:
    import torch

    from ..loading import KolorsComponents

__all__ = ["MODES", "OFFLOADS", "TEXT_ENCODER_QUANTS", "RunSettings", "enable_vae_tiling", "prepare_components",
           "settings_for"]

VAE_TILE = 512  # pixels; SDXL's VAE config says 1024, which would leave a 1024² image untiled


def prepare_components(components: KolorsComponents, settings: RunSettings, device: torch.device) -> list[str]:
    """Apply the load-time part of ``settings`` to freshly loaded components; what was applied, in words."""
    from ..devices import move
    from .offload import stream_layers
    from .quantize import fp8_supported, quantize_text_encoder, quantize_unet_fp8

    applied = []
    if settings.text_encoder_quant != "none":
        gpu = device if device.type == "cuda" else None
        quantize_text_encoder(components.text_encoder, settings.text_encoder_quant, work_device=gpu)
        move(components.text_encoder, "cpu" if settings.weights_on_cpu else device)
        applied.append(f"text encoder {settings.text_encoder_quant}")
    if settings.fp8 and fp8_supported(device):
        layers = quantize_unet_fp8(components.unet)
        applied.append(f"fp8 UNet matmuls ({len(layers)} layers)")
    if settings.vae_tiling:
        enable_vae_tiling(components.vae)
        applied.append(f"VAE tiles of {VAE_TILE} px")
    if settings.offload == "sequential" and device.type != "cpu":
        for module in (components.text_encoder, components.unet, components.vae):
            stream_layers(module, device)
        applied.append("weights streamed layer by layer")
    return applied


def enable_vae_tiling(vae, tile: int = VAE_TILE) -> None:
    """Decode (and encode) in overlapping ``tile``-pixel tiles, blended at the seams."""
    vae.enable_tiling()
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    vae.tile_sample_min_size = min(vae.tile_sample_min_size, tile)
    vae.tile_latent_min_size = vae.tile_sample_min_size // factor
