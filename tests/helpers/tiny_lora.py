"""Random LoRAs for the tiny Kolors models, made with peft and saved as diffusers writes them."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch


def peft_lora(model: torch.nn.Module, targets: list[str], rank: int, seed: int,
              spread: float | None = None) -> dict[str, torch.Tensor]:
    """A random LoRA for ``model`` made with peft: its state dict in peft names (``<module>.lora_A.weight``).
    Its tensors are normal with standard deviation ``spread`` (default: 0.6 / sqrt(fan-in))."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    model = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets),
                                    copy.deepcopy(model))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                fan_in = param[0].numel()
                scale = spread if spread is not None else 0.6 / math.sqrt(fan_in)
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    return {k: v.contiguous() for k, v in get_peft_model_state_dict(model).items()}


def write_lora(path: Path, unet_sd: dict[str, torch.Tensor], text_sd: dict[str, torch.Tensor] | None = None) -> Path:
    """``unet.<m>.lora_A.weight`` (+ ``text_encoder.…``) safetensors, as diffusers' save_lora_weights writes."""
    from diffusers import KolorsPipeline

    path.parent.mkdir(parents=True, exist_ok=True)
    KolorsPipeline.save_lora_weights(path.parent, weight_name=path.name, unet_lora_layers=unet_sd,
                                     text_encoder_lora_layers=text_sd)
    return path
