"""Adapters a pipeline owns and applies per request: LoRAs (lora.py; file formats in lora_format.py), ControlNets
(controlnet.py) and image prompts (image_prompts.py; the IP-Adapter files in ip_adapter.py). The older functional
API is importable from here; names are imported on first use."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "LoadedLora": "lora", "a1111_lora_hashes": "lora", "fuse_lora": "lora", "load_lora": "lora",
    "loaded_loras": "lora", "lora_parameters": "lora", "parse_lora_spec": "lora", "set_lora_weights": "lora",
    "unfuse_lora": "lora", "unload_lora": "lora",
    "load_face_id": "image_prompts", "load_ip_adapter": "image_prompts", "loaded_ip_adapters": "image_prompts",
    "set_ip_adapter_scale": "image_prompts", "unload_ip_adapter": "image_prompts",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
