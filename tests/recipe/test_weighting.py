"""``--foreground-from``: which latent cells the recipe's foreground weight falls on, and x̂₀ from a prediction."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from kolors.recipe.weighting import cell_weight, fit_threshold, shape_cells
from kolors.training.loss import predicted_sample, prediction_target


@pytest.mark.parametrize("kind", ["v_prediction", "epsilon", "sample"])
def test_the_predicted_sample_of_the_exact_target_is_the_clean_latents(kind):
    scheduler = DDPMScheduler(prediction_type=kind, rescale_betas_zero_snr=kind == "v_prediction",
                              timestep_spacing="trailing")
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    steps = torch.tensor([0, 300, 800, 999 if kind == "v_prediction" else 990])
    noisy = scheduler.add_noise(x0, noise, steps)
    found = predicted_sample(prediction_target(scheduler, x0, noise, steps), noisy, steps,
                             alphas_cumprod=scheduler.alphas_cumprod, prediction_type=kind)
    torch.testing.assert_close(found, x0, atol=2e-3 if kind == "epsilon" else 1e-4, rtol=0)
    wrong = predicted_sample(prediction_target(scheduler, x0, noise, steps) + 1, noisy, steps, alphas_cumprod=scheduler.alphas_cumprod, prediction_type=kind)
    assert (wrong - x0)[1:].abs().amin(dim=(1, 2, 3)).gt(0.5).all()  # the check can fail


def _latents_with_shapes() -> tuple[torch.Tensor, torch.Tensor]:
    """Four 4×16×16 latents, each a flat background with small noise and one or two 3×3 'shapes'."""
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(4, 4, 1, 1, generator=g) + 0.05 * torch.randn(4, 4, 16, 16, generator=g)
    masks = torch.zeros(4, 16, 16, dtype=torch.bool)
    for i, (y, x) in enumerate([(2, 2), (10, 4), (6, 12), (12, 12)]):
        masks[i, y:y + 3, x:x + 3] = True
    masks[3, 1:4, 1:4] = True
    latents = latents + masks[:, None] * torch.tensor([1.5, -1.0, 0.8, 0.0]).view(1, 4, 1, 1)
    return latents, masks


def test_shape_cells_find_what_differs_from_the_background_at_the_fitted_threshold():
    latents, masks = _latents_with_shapes()
    threshold, iou = fit_threshold(latents, masks)
    assert iou == 1.0 and torch.equal(shape_cells(latents, threshold), masks)
    assert fit_threshold(latents, masks[torch.tensor([1, 2, 3, 0])])[1] < 0.2  # others' masks: no fit


def test_the_weight_falls_on_the_target_the_prediction_or_both():
    """An x̂₀ with an added shape and one missing: ``prediction`` weighs the added one only, ``target`` the missing
    one only, ``both`` either."""
    latents, masks = _latents_with_shapes()
    threshold, _ = fit_threshold(latents, masks)
    target = masks.clone()
    target[0] = False
    target[0, 8:11, 8:11] = True  # the model drew (2, 2) where the image has (8, 8)
    added, missing = masks[0], target[0]
    w = {source: cell_weight(3.0, source, target=target, threshold=threshold) for source in
         ("target", "prediction", "both")}
    w = {source: (weight(latents) if callable(weight) else weight)[0, 0] for source, weight in w.items()}
    assert w["target"][missing].eq(4).all() and w["target"][added].eq(1).all()
    assert w["prediction"][added].eq(4).all() and w["prediction"][missing].eq(1).all()
    assert w["both"][added | missing].eq(4).all() and w["both"][~(added | missing)].eq(1).all()
