"""Adapters that extend a loaded Kolors model (ControlNet, LoRA, IP-Adapter, …)."""

from .lora import (
    LoadedLora,
    a1111_lora_hashes,
    fuse_lora,
    load_lora,
    loaded_loras,
    lora_parameters,
    parse_lora_spec,
    set_lora_weights,
    unfuse_lora,
    unload_lora,
)

__all__ = [
    "LoadedLora",
    "a1111_lora_hashes",
    "fuse_lora",
    "load_lora",
    "loaded_loras",
    "lora_parameters",
    "parse_lora_spec",
    "set_lora_weights",
    "unfuse_lora",
    "unload_lora",
]
