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


def test_element_weights_make_each_row_a_weighted_mean():
    """``weight`` (the recipe's --foreground-weight) weighs elements within a row: a uniform weight changes nothing,
    a weight that is zero outside a region gives that region's MSE, and the row's scale is kept."""
    alphas_cumprod = torch.tensor([0.99, 0.5])
    t = torch.tensor([0, 1])
    prediction = torch.zeros(2, 4, 2, 2)
    target = torch.zeros(2, 4, 2, 2)
    target[:, :, 0, 0] = 3.0  # one cell of four wrong by 3 in every channel: plain row MSE 9/4
    plain = diffusion_loss(prediction, target, t, alphas_cumprod=alphas_cumprod)
    assert float(plain) == pytest.approx(9 / 4)
    uniform = diffusion_loss(prediction, target, t, alphas_cumprod=alphas_cumprod, weight=torch.full((2, 1, 2, 2), 7.0))
    assert float(uniform) == pytest.approx(float(plain))
    only_cell = torch.zeros(2, 1, 2, 2)
    only_cell[:, :, 0, 0] = 1.0
    assert float(diffusion_loss(prediction, target, t, alphas_cumprod=alphas_cumprod, weight=only_cell)) == \
        pytest.approx(9.0)
    foreground = 1.0 + 3.0 * only_cell  # weights 4, 1, 1, 1: (4 × 9) / 7
    assert float(diffusion_loss(prediction, target, t, alphas_cumprod=alphas_cumprod, weight=foreground)) == \
        pytest.approx(36 / 7)
