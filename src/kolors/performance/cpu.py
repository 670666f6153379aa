"""Half-precision weights on CPUs without half-precision matmul instructions: stored small, computed in fp32.

On such CPUs (x86 without AVX512-BF16/AMX) PyTorch runs bf16/fp16 matmuls through slow fallbacks: a 256×1024 by
1024×1024 matmul on one core of the 2-core AMD EPYC CI machine ran at 0.6 GFLOP/s in bf16 and 0.5 in fp16 against
19.8 in fp32 (33× slower). Full-size Kolors only fits in 24 GiB of RAM with half-precision weights, so there the
weights stay in bf16/fp16 and each linear/conv layer is cast to fp32 for its own forward (diffusers' layerwise
casting hooks); norms and the small VAE are kept in fp32 outright.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ..loading import KolorsComponents

__all__ = ["compute_dtype", "compute_in_float32", "has_fast_half_matmul"]

logger = logging.getLogger(__name__)


def has_fast_half_matmul(dtype: torch.dtype) -> bool:
    """Whether this CPU has matmul instructions for ``dtype`` (bf16: AVX512-BF16 or AMX; fp16: AMX-FP16).

    Non-x86 CPUs (Arm, Apple) are taken to have them.
    """
    import platform

    import torch

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    if dtype == torch.bfloat16:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    if dtype == torch.float16:
        return bool(torch.cpu._is_amx_fp16_supported())
    return True


def compute_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype to compute in for weights of ``dtype`` on ``device``: fp32 for half weights on a CPU without
    half-precision matmuls, else ``dtype`` itself."""
    import torch

    if device.type == "cpu" and dtype in (torch.float16, torch.bfloat16) and not has_fast_half_matmul(dtype):
        return torch.float32
    return dtype


def compute_in_float32(components: KolorsComponents, storage_dtype: torch.dtype, *,
                       skip_text_encoder: bool = False) -> None:
    """Keep the UNet's and text encoder's linear/conv weights in ``storage_dtype``, computing each layer in fp32.

    Every other parameter and buffer (norms, embeddings' neighbours, the whole VAE) becomes fp32, so activations
    stay fp32 throughout. ``skip_text_encoder``: leave a (quantised) text encoder as it is.
    """
    import torch
    from diffusers.hooks import apply_layerwise_casting
    from diffusers.hooks.layerwise_casting import _GO_LC_SUPPORTED_PYTORCH_LAYERS as CAST_LAYERS

    modules = [components.unet] + ([] if skip_text_encoder else [components.text_encoder])
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, CAST_LAYERS):
                continue
            for tensors in (sub._parameters, sub._buffers):
                for name, t in tensors.items():
                    if t is not None and t.is_floating_point() and t.dtype != torch.float32:
                        t.data = t.data.float()
        apply_layerwise_casting(module, storage_dtype=storage_dtype, compute_dtype=torch.float32,
                                skip_modules_pattern=())
    components.vae.float()
