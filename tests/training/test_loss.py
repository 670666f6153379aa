"""The diffusion loss shared by `kolors train` and the built-in model's recipe: MSE per row, Min-SNR-γ weights."""

from __future__ import annotations

import pytest
import torch

from kolors.training.loss import diffusion_loss, min_snr_weight


def test_min_snr_weights_follow_the_snr_of_each_timestep():
    alphas_cumprod = torch.tensor([0.99, 0.5, 0.01])  # SNR 99, 1, 1/99
    t = torch.tensor([0, 1, 2])
    eps = min_snr_weight(alphas_cumprod, t, gamma=5.0)
    torch.testing.assert_close(eps, torch.tensor([5.0 / 99.0, 1.0, 1.0]))
    v = min_snr_weight(alphas_cumprod, t, gamma=5.0, prediction_type="v_prediction")
    torch.testing.assert_close(v, torch.tensor([5.0 / 100.0, 0.5, (1 / 99) / (1 / 99 + 1)]))


def test_loss_is_the_mean_of_weighted_row_errors():
    alphas_cumprod = torch.tensor([0.99, 0.5])
    prediction = torch.zeros(2, 4, 2, 2)
    target = torch.stack([torch.full((4, 2, 2), 1.0), torch.full((4, 2, 2), 2.0)])  # row MSE 1 and 4
    t = torch.tensor([0, 1])
    assert float(diffusion_loss(prediction, target, t, alphas_cumprod=alphas_cumprod)) == pytest.approx(2.5)
    weighted = diffusion_loss(prediction, target, t, alphas_cumprod=alphas_cumprod, snr_gamma=5.0)
    assert float(weighted) == pytest.approx((1.0 * 5 / 99 + 4.0 * 1.0) / 2)
