"""The UNet on its own, for gpu_all.py: one guided step's inputs, FLOPs and time, the device's GEMM rate, and
fp8 layer by layer (each linear layer's error against its unquantised self, on the rows it multiplies in a step)."""

from __future__ import annotations

import copy
import statistics

import torch

from gpu_session import Session, describe


def unet_inputs(components, size: int, batch: int = 2) -> tuple:
    """UNet inputs of one guided step at ``size`` (batch 2), with the dtypes and layout the pipeline passes."""
    unet, c = components.unet, components.unet.config
    dev, dt = unet.device, unet.dtype
    side = size // 2 ** (len(components.vae.config.block_out_channels) - 1)
    latents = torch.randn(batch, c.in_channels, side, side, device=dev, dtype=dt)
    t = torch.tensor(500.0, device=dev)  # as the Euler scheduler's timesteps: a float32 0-d tensor on the device
    context = torch.randn(batch, 256, c.encoder_hid_dim, device=dev, dtype=dt)
    pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
    added = {"text_embeds": torch.randn(batch, pooled, device=dev, dtype=dt),
             "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * batch, device=dev, dtype=dt)}
    return latents, t, context, added


@torch.no_grad()
def unet_call(unet, inputs: tuple) -> torch.Tensor:
    """The UNet called exactly as the pipeline calls it (a compiled UNet then needs no new graph)."""
    latents, t, context, added = inputs
    return unet(latents, t, encoder_hidden_states=context, added_cond_kwargs=added, return_dict=False)[0]


def unet_flops(unet, inputs: tuple) -> float:
    """FLOPs of one UNet call, counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        unet_call(unet, inputs)
    return float(counter.get_total_flops())


def step_seconds(s: Session, unet, inputs: tuple, repeats: int = 10) -> float:
    """Median seconds of one UNet call, after three warm-up calls."""
    for _ in range(3):
        unet_call(unet, inputs)
    return statistics.median(s.seconds(lambda: unet_call(unet, inputs))[0] for _ in range(repeats))


def gemm_tflops(s: Session) -> tuple[int, float]:
    """(n, TFLOP/s) of an n³ matmul in the run's dtype: the device's practical matmul rate."""
    n = s.args.gemm_n
    a, b = (torch.randn(n, n, device=s.device, dtype=s.dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    seconds = statistics.median(s.seconds(lambda: a @ b)[0] for _ in range(10))
    return n, 2 * n**3 / seconds / 1e12


def linear_rows(unet, inputs: tuple) -> dict[str, int]:
    """Rows (tokens × batch) each linear layer multiplies in one guided step."""
    rows: dict[str, int] = {}

    def record(name: str):
        def hook(module, args, output) -> None:
            rows.setdefault(name, args[0].numel() // args[0].shape[-1])
        return hook

    handles = [m.register_forward_hook(record(name)) for name, m in unet.named_modules()
               if isinstance(m, torch.nn.Linear)]
    try:
        unet_call(unet, inputs)
    finally:
        for h in handles:
            h.remove()
    return rows


@torch.no_grad()
def layer_errors(reference, quantized, names, rows: dict[str, int], dtype: torch.dtype) -> list[float]:
    out = []
    for name in names:
        want_layer, got_layer = reference.get_submodule(name), quantized.get_submodule(name)
        x = torch.randn(rows.get(name, 256), want_layer.in_features, device=want_layer.weight.device, dtype=dtype)
        want = want_layer(x).float()
        out.append(((got_layer(x).float() - want).norm() / want.norm()).item())
    return out


@torch.no_grad()
def per_row_fp8_each_layer(unet, rows: dict[str, int]) -> tuple[dict[str, float], dict[str, str]]:
    """Each linear layer alone in per-row fp8 on its own row count: its error, or the error it raised."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_
    from torchao.quantization.granularity import PerRow

    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    errors, failures = {}, {}
    for name, n in rows.items():
        layer = unet.get_submodule(name)
        try:
            quantized = copy.deepcopy(layer)
            quantize_(quantized, config)
            errors[name] = layer_errors(layer, quantized, [""], {"": n}, torch.bfloat16)[0]
        except Exception as exc:  # noqa: BLE001 - the failures are the finding
            failures[name] = describe(exc)
    return errors, failures


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.4f} / {max(values):.4f}"
