"""Adapters that extend a loaded Kolors model (ControlNet, LoRA, IP-Adapter, …)."""

from .ip_adapter import (
    load_face_id,
    load_ip_adapter,
    loaded_ip_adapters,
    set_ip_adapter_scale,
    unload_ip_adapter,
)
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
    "load_face_id",
    "load_ip_adapter",
    "load_lora",
    "loaded_ip_adapters",
    "loaded_loras",
    "lora_parameters",
    "parse_lora_spec",
    "set_ip_adapter_scale",
    "set_lora_weights",
    "unfuse_lora",
    "unload_ip_adapter",
    "unload_lora",
]
