"""Stage "vae": a small diffusers ``AutoencoderKL`` trained on the shape renders.

Four levels (three 2× downsamplings, the SDXL factor 8) and 4 latent channels, as in Kolors: 128 px images give
16×16 latents. The loss is L1 + MSE reconstruction plus a small KL term; ``scaling_factor`` (1/std of the
latents the diffusion model will see) is measured afterwards and written into the config, and so is
``force_upcast``, from a check that fp16 decoding neither overflows nor drifts from fp32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

__all__ = [
    "VAESpec",
    "build_vae",
    "train_vae",
    "measure_scaling_factor",
    "check_fp16_decode",
    "encode_images",
    "to_model_range",
]


@dataclass
class VAESpec:
    block_out_channels: tuple[int, ...] = (16, 32, 64, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    latent_channels: int = 4


def build_vae(spec: VAESpec, image_size: int) -> AutoencoderKL:
    n = len(spec.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(spec.block_out_channels),
        layers_per_block=spec.layers_per_block,
        act_fn="silu",
        latent_channels=spec.latent_channels,
        norm_num_groups=spec.norm_num_groups,
        sample_size=image_size,
        scaling_factor=1.0,
        force_upcast=False,
    )


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×H×W×3 → float N×3×H×W in [-1, 1] (what the pipeline's image processor inverts)."""
    return images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def foreground_mask(x: torch.Tensor) -> torch.Tensor:
    """N×1×H×W: 1 where a pixel differs from the image's corner (background) colour, grown by one pixel."""
    bg = x[:, :, :1, :1]
    mask = ((x - bg).abs().amax(dim=1, keepdim=True) > 0.02).float()
    return F.max_pool2d(mask, 3, stride=1, padding=1)


def _augment(x: torch.Tensor) -> torch.Tensor:
    """Random flips and quarter turns: free extra variety for an autoencoder (no captions involved)."""
    if torch.rand(()) < 0.5:
        x = x.flip(3)
    k = int(torch.randint(0, 4, ()))
    return torch.rot90(x, k, (2, 3)) if k else x


def train_vae(
    vae: AutoencoderKL,
    pool: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float = 5e-4,
    kl_weight: float = 1e-5,
    foreground_weight: float = 4.0,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    deadline: float | None = None,
    log: Callable[[int, dict], None] | None = None,
    log_every: int = 50,
    crop: int | None = None,
    anchor: AutoencoderKL | None = None,
    anchor_weight: float = 1.0,
    decoder_only: bool = False,
) -> dict:
    """Train ``vae`` in place on random batches of ``pool`` (uint8 N×H×W×3, on any device); returns last metrics.

    Stops early when ``time.monotonic()`` passes ``deadline``; the learning rate decays with the larger of the
    step and the time progress, so a run cut by the deadline still ends at a low rate.

    ``crop``: train on random ``crop``×``crop`` windows (the autoencoder is convolutional: the same function at a
    fraction of the cost). ``anchor``: a frozen autoencoder whose latents (posterior means, scaled by its
    ``scaling_factor``) the trained one is held near with ``anchor_weight`` — continuing an autoencoder on new data
    (new colours) without moving the latents a diffusion model has learned more than the new data needs.
    ``decoder_only``: train the decoder (and its ``post_quant_conv``) alone on the frozen encoder's latents, which
    then do not move at all: a better drawing of the latents a diffusion model already makes.
    """
    import time

    t_start = time.monotonic()
    vae.to(device).train()
    if decoder_only:
        vae.requires_grad_(False)
        vae.encoder.eval()
        trained = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
        for param in trained:
            param.requires_grad_(True)
    else:
        trained = list(vae.parameters())
    if anchor is not None:
        anchor = anchor.to(device).eval().requires_grad_(False)
        scale = float(anchor.config.scaling_factor)
    opt = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0, betas=(0.9, 0.99),
                            fused=device.type == "cuda")
    warmup = max(1, min(200, steps // 10))

    def lr_at(step: int) -> float:
        p = step / steps
        if deadline is not None:
            p = max(p, (time.monotonic() - t_start) / max(1e-6, deadline - t_start))
        p = min(1.0, p)
        return lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    n = pool.shape[0]
    metrics: dict = {}
    zero = lambda: {"l1": torch.zeros((), device=device), "mse": torch.zeros((), device=device),  # noqa: E731
                    "kl": torch.zeros((), device=device)}
    acc, count = zero(), 0
    for step in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=generator)
        x = _augment(to_model_range(pool[idx].to(device, non_blocking=True)))
        # Shapes cover a few percent of the pixels: weigh them (and a one-pixel ring) up against the background.
        weight = 1.0 + foreground_weight * foreground_mask(x)
        if crop is not None and crop < x.shape[-1]:
            oy, ox = (int(v) for v in torch.randint(0, x.shape[-1] - crop + 1, (2,), generator=generator))
            x, weight = x[..., oy : oy + crop, ox : ox + crop], weight[..., oy : oy + crop, ox : ox + crop]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            with torch.set_grad_enabled(not decoder_only):
                posterior = vae.encode(x).latent_dist
            rec = vae.decode(posterior.sample()).sample
        rec = rec.float()
        err = rec - x
        l1 = err.abs().mean()
        mse = err.pow(2).mean()
        wl = (weight * (err.abs() + err.pow(2))).mean() / weight.mean()
        mean, logvar = posterior.mean.float(), posterior.logvar.float()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        loss = wl + kl_weight * kl
        if anchor is not None:
            with torch.no_grad():
                target = anchor.encode(x).latent_dist.mean.float()
            loss = loss + anchor_weight * ((mean - target) * scale).pow(2).mean()
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        acc["l1"] += l1.detach()
        acc["mse"] += mse.detach()
        acc["kl"] += kl.detach()
        count += 1
        last = step == steps - 1 or (deadline is not None and time.monotonic() > deadline)
        if (step + 1) % log_every == 0 or last:
            metrics = {key: float(v) / count for key, v in acc.items()}
            metrics["psnr"] = 10 * math.log10(4.0 / max(metrics["mse"], 1e-10))
            metrics["lr"] = opt.param_groups[0]["lr"]
            if log is not None:
                log(step + 1, metrics)
            acc, count = zero(), 0
        if last:
            metrics["steps"] = step + 1
            break
    vae.requires_grad_(True).eval()
    return metrics


@torch.no_grad()
def encode_images(
    vae: AutoencoderKL, pool: torch.Tensor, *, device: torch.device, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std (unscaled latents, fp16, on CPU) of every image of ``pool``."""
    vae.to(device).eval()
    means, stds = [], []
    for i in range(0, pool.shape[0], batch_size):
        x = to_model_range(pool[i : i + batch_size].to(device))
        dist = vae.encode(x).latent_dist
        means.append(dist.mean.half().cpu())
        stds.append(dist.std.half().cpu())
    return torch.cat(means), torch.cat(stds)


def measure_scaling_factor(means: torch.Tensor, stds: torch.Tensor) -> float:
    """1 / std of sampled latents (the SD/SDXL convention), rounded to 5 significant digits."""
    g = torch.Generator().manual_seed(0)
    n = min(means.shape[0], 4096)
    m, s = means[:n].float(), stds[:n].float()
    z = m + s * torch.randn(m.shape, generator=g)
    return float(f"{1.0 / float(z.std()):.5g}")


@torch.no_grad()
def check_fp16_decode(vae: AutoencoderKL, latents: torch.Tensor, *, device: torch.device) -> dict:
    """Largest activation of an fp32 decode and, where fp16 runs, the fp16-vs-fp32 output difference.

    ``safe`` is true when every activation stays far below the fp16 limit (65504) and the fp16 output matches.
    """
    vae.to(device).eval()
    peak = 0.0

    def hook(_module, _inputs, output):
        nonlocal peak
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            peak = max(peak, float(output.detach().abs().max()))

    handles = [m.register_forward_hook(hook) for m in vae.decoder.modules()]
    handles.append(vae.post_quant_conv.register_forward_hook(hook))
    try:
        ref = vae.decode(latents.to(device).float()).sample
    finally:
        for h in handles:
            h.remove()
    result = {"peak_activation": peak, "max_abs_diff_fp16": None}
    try:
        half = _half_copy(vae).to(device)
        out = half.decode(latents.to(device).half()).sample.float()
        result["max_abs_diff_fp16"] = float((out - ref).abs().max()) if torch.isfinite(out).all() else float("inf")
    except (RuntimeError, NotImplementedError):  # fp16 kernels missing on this device
        pass
    diff = result["max_abs_diff_fp16"]
    result["safe"] = peak < 2048.0 and (diff is None or diff < 0.1)
    return result


def _half_copy(vae: AutoencoderKL) -> AutoencoderKL:
    import copy

    return copy.deepcopy(vae).half()


def pool_to_tensor(images: np.ndarray) -> torch.Tensor:
    """A uint8 N×H×W×3 array as a shared-memory-friendly contiguous uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(images))
