"""The diffusion loss: mean squared error of the UNet's prediction, per row, optionally Min-SNR-γ weighted.

One function for `kolors train` (every mode) and for the built-in model's recipe (``kolors.recipe``), so that both
weigh timesteps the same way (Hang et al., "Efficient Diffusion Training via Min-SNR Weighting Strategy", 2023).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import KolorsError

__all__ = ["min_snr_weight", "diffusion_loss", "prediction_target", "predicted_sample"]


def min_snr_weight(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float,
                   prediction_type: str = "epsilon") -> torch.Tensor:
    """Per-row weights min(SNR, γ) / SNR (for v-prediction: min(SNR, γ) / (SNR + 1)) at ``timesteps``."""
    alphas = alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alphas / (1 - alphas)
    weight = torch.clamp(snr, max=gamma)
    return weight / (snr + 1) if prediction_type == "v_prediction" else weight / snr


def diffusion_loss(prediction: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor, *,
                   alphas_cumprod: torch.Tensor, snr_gamma: float | None = None,
                   prediction_type: str = "epsilon", weight: torch.Tensor | None = None) -> torch.Tensor:
    """The batch's mean of per-row MSE (in fp32), each row weighted by Min-SNR-γ when ``snr_gamma`` is set.

    ``weight`` (broadcast to the prediction) makes each row's MSE a weighted mean over its elements: the loss keeps
    its scale, and a uniform weight changes nothing."""
    dims = tuple(range(1, target.ndim))
    squared = F.mse_loss(prediction.float(), target.float(), reduction="none")
    if weight is None:
        per_row = squared.mean(dim=dims)
    else:
        weight = weight.float().expand_as(squared)
        per_row = (squared * weight).sum(dim=dims) / weight.sum(dim=dims)
    if snr_gamma:
        per_row = per_row * min_snr_weight(alphas_cumprod, timesteps, snr_gamma, prediction_type)
    return per_row.mean()


def prediction_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet should predict under ``scheduler``'s prediction type (a diffusers DDPMScheduler)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise KolorsError(f"cannot train a model with prediction_type '{kind}' (scheduler config)")


def predicted_sample(prediction: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor, *,
                     alphas_cumprod: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The clean latents x̂₀ that ``prediction`` (of ``prediction_type``) implies for ``noisy`` at ``timesteps``."""
    alphas = alphas_cumprod.to(noisy.device)[timesteps].float().view(-1, *([1] * (noisy.ndim - 1)))
    pred, noisy = prediction.float(), noisy.float()
    if prediction_type == "v_prediction":
        return alphas.sqrt() * noisy - (1 - alphas).sqrt() * pred
    if prediction_type == "epsilon":
        return (noisy - (1 - alphas).sqrt() * pred) / alphas.clamp(min=1e-8).sqrt()
    if prediction_type == "sample":
        return pred
    raise KolorsError(f"cannot train a model with prediction_type '{prediction_type}' (scheduler config)")
