"""LoRA for training: peft adapters on the UNet (and ChatGLM), saved as a diffusers-format ``.safetensors``.

The file is what diffusers' LoRA trainers write (``unet.…`` / ``text_encoder.…`` keys, the LoraConfig in the
header), so ``KolorsPipeline.load_lora_weights`` and ``kolors.adapters.lora.load_lora`` both read it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from ..files import atomic_file

ADAPTER = "default"
TEXT_ENCODER_TARGETS = ["query_key_value", "dense"]  # ChatGLM3 attention: fused qkv and output projection
LORA_FILE = "pytorch_lora_weights.safetensors"


def lora_config(rank: int, alpha: float | None, targets: list[str]) -> LoraConfig:
    """The LoraConfig of a run (alpha defaults to the rank: scale 1)."""
    return LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, init_lora_weights="gaussian",
                      target_modules=list(targets))


def add_lora(model: torch.nn.Module, config: LoraConfig) -> list[torch.nn.Parameter]:
    """Inject trainable LoRA layers into ``model`` (its own weights stay frozen); returns the new parameters."""
    model.requires_grad_(False)
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


def lora_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights of ``model`` in peft names (``<module>.lora_A.weight``), on the CPU."""
    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER).items()}


def load_lora_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put LoRA weights saved by ``lora_state`` back into ``model``."""
    result = set_peft_model_state_dict(model, state, adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise RuntimeError(f"LoRA checkpoint does not fit the model: unexpected {unexpected[0]}")


def save_lora_file(folder: Path, unet: torch.nn.Module, config: LoraConfig,
                   text_encoder: torch.nn.Module | None = None, text_config: LoraConfig | None = None) -> Path:
    """Write ``folder/pytorch_lora_weights.safetensors`` in diffusers' LoRA format and return its path."""
    from diffusers import KolorsPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    with atomic_file(folder / LORA_FILE) as tmp:
        KolorsPipeline.save_lora_weights(
            folder,
            unet_lora_layers=convert_state_dict_to_diffusers(lora_state(unet)),
            text_encoder_lora_layers=(convert_state_dict_to_diffusers(lora_state(text_encoder)) if text_encoder
                                      else None),
            unet_lora_adapter_metadata=_metadata(config),
            text_encoder_lora_adapter_metadata=_metadata(text_config) if text_encoder and text_config else None,
            weight_name=tmp.name,
        )
    return folder / LORA_FILE


def _metadata(config: LoraConfig) -> dict:
    """The JSON-serialisable LoraConfig fields diffusers stores in the file header."""
    return {"r": config.r, "lora_alpha": config.lora_alpha, "target_modules": sorted(config.target_modules),
            "init_lora_weights": config.init_lora_weights}


def register_checkpoint_hooks(accelerator, models: list[torch.nn.Module]) -> None:
    """Make accelerate's save_state/load_state store only the LoRA weights of ``models`` (not the base model)."""
    def save(prepared: list, weights: list, folder: str) -> None:
        if accelerator.is_main_process:
            for i, model in enumerate(models):
                save_file(lora_state(model), str(Path(folder) / f"lora_{i}.safetensors"))
        weights.clear()

    def load(prepared: list, folder: str) -> None:
        for i, model in enumerate(models):
            load_lora_state(model, load_file(str(Path(folder) / f"lora_{i}.safetensors")))
        prepared.clear()

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)
