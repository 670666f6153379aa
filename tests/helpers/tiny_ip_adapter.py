"""Tiny random Kolors IP-Adapters in the published layouts, for the tiny Kolors UNet (tests/helpers/tiny_kolors.py).

``write_tiny_ip_adapter_plus(root)`` mimics ``Kwai-Kolors/Kolors-IP-Adapter-Plus``::

    Kolors-IP-Adapter-Plus/
      config.json, model_index.json            "{}" (2 bytes each, as published)
      ip_adapter_plus_general.bin              pickled {"image_proj": {...}, "ip_adapter": {...}} (fp16)
      image_encoder/config.json + model.safetensors   a CLIPVisionModelWithProjection (ViT-L/14-336 in reality)

``write_tiny_face_id_plus(root)`` mimics ``Kwai-Kolors/Kolors-IP-Adapter-FaceID-Plus``::

    Kolors-IP-Adapter-FaceID-Plus/
      ipa-faceid-plus.bin                      pickled {"image_proj": {...}, "adapter_modules": {...}}
      clip-vit-large-patch14-336/              the CLIP image encoder

Tensor names are the published ones (the original IP-Adapter resampler names under ``image_proj``; the attention
layers as ``<k>.to_k_ip.weight`` / ``<k>.to_v_ip.weight``, k = 1, 3, 5, … over the UNet's attention processors).
``safetensors=True`` also writes the adapter as ``.safetensors`` with ``image_proj.`` / ``ip_adapter.`` prefixes.
Sizes: the resampler works 64 wide (one 64-wide head, as the loaders infer heads from ``to_q`` / 64), depth 4.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from helpers.tiny_kolors import TEXT_HIDDEN, UNET_CONFIG

CLIP_CONFIG = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                   image_size=28, patch_size=14, projection_dim=16)
RESAMPLER_DIM = 64
DEPTH = 4
PLUS_QUERIES = 4  # 16 in the published adapter
FACE_TOKENS = 6
FACE_ID_DIM = 512


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    fan_in = shape[-1] if len(shape) > 1 else 1
    scale = 1 / math.sqrt(fan_in) if len(shape) > 1 else 0.02
    return (torch.randn(shape, generator=gen) * scale).half()


def _layer_norm(gen: torch.Generator, prefix: str, dim: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": (1 + 0.1 * torch.randn(dim, generator=gen)).half(),
            f"{prefix}.bias": (0.1 * torch.randn(dim, generator=gen)).half()}


def _resampler_layers(gen: torch.Generator, prefix: str, dim: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for i in range(DEPTH):
        p = f"{prefix}layers.{i}"
        out.update(_layer_norm(gen, f"{p}.0.norm1", dim))
        out.update(_layer_norm(gen, f"{p}.0.norm2", dim))
        out[f"{p}.0.to_q.weight"] = _randn(gen, RESAMPLER_DIM, dim)
        out[f"{p}.0.to_kv.weight"] = _randn(gen, 2 * RESAMPLER_DIM, dim)
        out[f"{p}.0.to_out.weight"] = _randn(gen, dim, RESAMPLER_DIM)
        out.update(_layer_norm(gen, f"{p}.1.0", dim))
        out[f"{p}.1.1.weight"] = _randn(gen, 4 * dim, dim)
        out[f"{p}.1.3.weight"] = _randn(gen, dim, 4 * dim)
    return out


def cross_attention_widths(unet_config: dict | None = None) -> list[int]:
    """The hidden width of each cross-attention layer of the UNet, in ``attn_processors`` order."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**(unet_config or UNET_CONFIG))
    modules = dict(unet.named_modules())
    return [modules[name[: -len(".processor")]].to_q.out_features
            for name in unet.attn_processors if name.endswith("attn2.processor")]


def _ip_layers(gen: torch.Generator, cross_dim: int, unet_config: dict | None) -> dict[str, torch.Tensor]:
    out = {}
    for i, hidden in enumerate(cross_attention_widths(unet_config)):
        key = 2 * i + 1
        out[f"{key}.to_k_ip.weight"] = _randn(gen, hidden, cross_dim)
        out[f"{key}.to_v_ip.weight"] = _randn(gen, hidden, cross_dim)
    return out


def _write_encoder(folder: Path, seed: int) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_CONFIG))
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.half().float())
    model.save_pretrained(folder)


def _write_adapter(folder: Path, name: str, state: dict[str, dict[str, torch.Tensor]], safetensors: bool) -> None:
    torch.save(state, folder / name)
    if safetensors:
        from safetensors.torch import save_file

        flat = {f"{group}.{k}": v.contiguous() for group, part in state.items() for k, v in part.items()}
        flat = {k.replace("adapter_modules.", "ip_adapter.", 1): v for k, v in flat.items()}
        save_file(flat, str(folder / (Path(name).stem + ".safetensors")))


def plus_state(seed: int = 0, *, cross_dim: int | None = None, feature_dim: int | None = None,
               unet_config: dict | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Random IP-Adapter-Plus tensors in the published names (``cross_dim`` other than the UNet's: a misfit)."""
    gen = torch.Generator().manual_seed(seed)
    cross_dim = cross_dim or (unet_config or UNET_CONFIG)["cross_attention_dim"]
    feature_dim = feature_dim or CLIP_CONFIG["hidden_size"]
    proj = {"latents": (torch.randn(1, PLUS_QUERIES, RESAMPLER_DIM, generator=gen) / 8).half(),
            "proj_in.weight": _randn(gen, RESAMPLER_DIM, feature_dim), "proj_in.bias": _randn(gen, RESAMPLER_DIM),
            "proj_out.weight": _randn(gen, cross_dim, RESAMPLER_DIM), "proj_out.bias": _randn(gen, cross_dim),
            **_layer_norm(gen, "norm_out", cross_dim), **_resampler_layers(gen, "", RESAMPLER_DIM)}
    return {"image_proj": proj, "ip_adapter": _ip_layers(gen, cross_dim, unet_config)}


def face_id_state(seed: int = 0, *, width: int = TEXT_HIDDEN, unet_config: dict | None = None
                  ) -> dict[str, dict[str, torch.Tensor]]:
    """Random FaceID-Plus tensors in the published names (6 tokens of the text width)."""
    gen = torch.Generator().manual_seed(seed)
    feature_dim = CLIP_CONFIG["hidden_size"]
    r = "perceiver_resampler."
    proj = {"proj.0.weight": _randn(gen, 2 * FACE_ID_DIM, FACE_ID_DIM), "proj.0.bias": _randn(gen, 2 * FACE_ID_DIM),
            "proj.2.weight": _randn(gen, FACE_TOKENS * width, 2 * FACE_ID_DIM),
            "proj.2.bias": _randn(gen, FACE_TOKENS * width), **_layer_norm(gen, "norm", width),
            f"{r}proj_in.weight": _randn(gen, width, feature_dim), f"{r}proj_in.bias": _randn(gen, width),
            f"{r}proj_out.weight": _randn(gen, width, width), f"{r}proj_out.bias": _randn(gen, width),
            **_layer_norm(gen, f"{r}norm_out", width), **_resampler_layers(gen, r, width)}
    cross_dim = (unet_config or UNET_CONFIG)["cross_attention_dim"]
    return {"image_proj": proj, "adapter_modules": _ip_layers(gen, cross_dim, unet_config)}


def write_tiny_ip_adapter_plus(root: Path, *, seed: int = 0, name: str = "Kolors-IP-Adapter-Plus",
                               safetensors: bool = False, **kwargs) -> Path:
    """A tiny ``Kwai-Kolors/Kolors-IP-Adapter-Plus`` folder under ``root`` (kwargs: see ``plus_state``)."""
    folder = Path(root) / name
    folder.mkdir(parents=True)
    for file in ("config.json", "model_index.json"):
        (folder / file).write_text("{}")
    _write_adapter(folder, "ip_adapter_plus_general.bin", plus_state(seed, **kwargs), safetensors)
    _write_encoder(folder / "image_encoder", seed + 100)
    return folder


def write_tiny_face_id_plus(root: Path, *, seed: int = 1, name: str = "Kolors-IP-Adapter-FaceID-Plus",
                            **kwargs) -> Path:
    """A tiny ``Kwai-Kolors/Kolors-IP-Adapter-FaceID-Plus`` folder under ``root``."""
    folder = Path(root) / name
    folder.mkdir(parents=True)
    _write_adapter(folder, "ipa-faceid-plus.bin", face_id_state(seed, **kwargs), False)
    _write_encoder(folder / "clip-vit-large-patch14-336", seed + 100)
    (folder / "README.md").write_text(json.dumps({"tiny": True}))
    return folder
