"""``--foreground-weight``: which latent cells of a training step weigh more in the diffusion loss.

Shapes cover about a tenth of a built-in model's image, so their colours are a small share of a plain loss. Weighing
the cells of the *training image's* shapes (``--foreground-from target``, the pool's masks) makes a missing shape
cost 1 + W times what an added one costs, and run 12 learnt to draw extra shapes (docs/evaluation.md). Weighing the
cells where the *model's own* estimate of the clean latents x̂₀ shows a shape (``prediction``) depends only on what
the model is given (noisy latents, timestep, caption), so the minimiser of the loss is still the posterior mean:
an added shape and a wrong colour cost more, a missing shape does not. ``both`` weighs either kind of cell.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["shape_cells", "fit_threshold", "cell_weight"]


def _distance_from_background(latents: torch.Tensor) -> torch.Tensor:
    """N×h×w: each cell's distance from its latent's per-channel median, which is the background's value (the
    background covers most of every image)."""
    flat = latents.float().flatten(2)
    background = flat.median(dim=2, keepdim=True).values
    return (flat - background).norm(dim=1).view(latents.shape[0], *latents.shape[2:])


def shape_cells(latents: torch.Tensor, threshold: float) -> torch.Tensor:
    """Bool N×h×w: the cells of (scaled) latents N×C×h×w that differ from their background by more than
    ``threshold``."""
    return _distance_from_background(latents) > threshold


@torch.no_grad()
def fit_threshold(latents: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
    """The threshold for :func:`shape_cells` that best reproduces the pool's rendered masks on its latents (the
    highest intersection over union of all thresholds, found exactly by sorting), and that IoU."""
    distance, order = _distance_from_background(latents).flatten().sort(descending=True)
    hits = masks.flatten().bool()[order].double().cumsum(0)  # shapes among the k farthest cells, k = 1, 2, …
    k = torch.arange(1, len(hits) + 1, dtype=torch.float64)
    iou = hits / (hits[-1] + k - hits)
    best = int(iou.argmax())
    below = distance[best + 1] if best + 1 < len(distance) else distance[best] - 1
    return float((distance[best] + below) / 2), float(iou[best])


def cell_weight(weight: float, source: str, *, target: torch.Tensor | None, threshold: float | None
                ) -> torch.Tensor | Callable[[torch.Tensor], torch.Tensor]:
    """The loss weight 1 + ``weight`` on shape cells, N×1×h×w: from the target's masks, or a function of the
    model's x̂₀ (``prediction``, ``both``) for :meth:`DiffusionTrainer.loss`."""
    if source == "target":
        return 1.0 + weight * target[:, None].float()

    def of_prediction(x0: torch.Tensor) -> torch.Tensor:
        cells = shape_cells(x0, threshold)
        if source == "both":
            cells = cells | target.bool()
        return 1.0 + weight * cells[:, None].float()

    return of_prediction
