"""Adapters that extend a loaded Kolors model (ControlNet, LoRA, IP-Adapter, …).

The names below are imported on first use, so that the CLI's parser can read adapter defaults without loading
diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "LoadedLora": "lora",
    "a1111_lora_hashes": "lora",
    "fuse_lora": "lora",
    "load_face_id": "ip_adapter",
    "load_ip_adapter": "ip_adapter",
    "load_lora": "lora",
    "loaded_ip_adapters": "ip_adapter",
    "loaded_loras": "lora",
    "lora_parameters": "lora",
    "parse_lora_spec": "lora",
    "set_ip_adapter_scale": "ip_adapter",
    "set_lora_weights": "lora",
    "unfuse_lora": "lora",
    "unload_ip_adapter": "ip_adapter",
    "unload_lora": "lora",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
