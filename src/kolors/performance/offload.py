"""Streaming a model's weights to the compute device layer by layer (the sequential mode), with diffusers' hooks.

Weights stay in (pinned) CPU memory; each leaf layer is copied to the device just before it runs and dropped
after, the next one prefetched on a side CUDA stream, so the device holds about one layer at a time.
"""

from __future__ import annotations

import torch


def stream_layers(module: torch.nn.Module, device: torch.device) -> None:
    """Keep ``module``'s weights on the CPU and bring each leaf layer to ``device`` only while it runs."""
    from diffusers.hooks import apply_group_offloading

    apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"),
                           offload_type="leaf_level", use_stream=device.type == "cuda")


def is_streamed(module: torch.nn.Module) -> bool:
    """Whether ``module`` has layer streaming applied (so it must not be moved as a whole)."""
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    return _is_group_offload_enabled(module)
