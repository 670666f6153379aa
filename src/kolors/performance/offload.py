"""Streaming a model's weights to the compute device layer by layer (the sequential mode), with diffusers' hooks.

Weights stay in (pinned) CPU memory; each leaf layer is copied to the device just before it runs and dropped
after, the next one prefetched on a side CUDA stream, so the device holds about one layer at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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


class Placement:
    """Where a pipeline's models compute: ``device``, with ``offload`` keeping every model in CPU memory and
    moving each to the device only while it runs (streamed models move layer by layer by themselves)."""

    def __init__(self, device: torch.device, offload: bool = False) -> None:
        self.device = device
        self.offload = offload

    @property
    def storage(self) -> torch.device:
        """Where models live between uses (what adapters are loaded onto)."""
        return torch.device("cpu") if self.offload else self.device

    @contextlib.contextmanager
    def using(self, *modules: torch.nn.Module) -> Iterator[None]:
        """``modules`` on the compute device inside this block (and back in CPU memory after it, with offload)."""
        from ..devices import move

        moving = self.offload and self.device.type != "cpu"
        moved = [m for m in dict.fromkeys(modules) if moving and not is_streamed(m)]
        try:
            for module in moved:
                move(module, self.device)
            yield
        finally:
            for module in moved:
                move(module, "cpu")
            if moved and self.device.type == "cuda":
                torch.cuda.empty_cache()
