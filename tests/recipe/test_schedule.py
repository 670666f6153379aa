"""The recipe's noise schedule options: Kolors' epsilon schedule, or v-prediction on a zero-terminal-SNR one."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusers import EulerDiscreteScheduler

from kolors.recipe.architecture import ARCHITECTURES, KOLORS_SCHEDULER_CONFIG, build_text_encoder, build_unet, \
    scheduler_config
from kolors.recipe.options import config_from_args
from kolors.recipe.trainer import DiffusionTrainer, noise_scheduler


def test_zero_terminal_snr_ends_in_pure_noise_and_samples_from_it():
    kolors = noise_scheduler()
    zero = noise_scheduler(scheduler_config("v_prediction", zero_terminal_snr=True))
    assert float(kolors.alphas_cumprod[-1]) > 1e-3  # Kolors' own schedule leaves a trace of the image at T
    assert float(zero.alphas_cumprod[-1]) == 0.0
    assert zero.config.prediction_type == "v_prediction"
    sampler = EulerDiscreteScheduler.from_config(scheduler_config("v_prediction", zero_terminal_snr=True))
    sampler.set_timesteps(5)
    assert int(sampler.timesteps[0]) == 1099  # trailing spacing: the first step is the pure-noise one
    assert scheduler_config() == KOLORS_SCHEDULER_CONFIG
    with pytest.raises(ValueError, match="needs v_prediction"):
        scheduler_config("epsilon", zero_terminal_snr=True)


class Constant(torch.nn.Module):
    """Stands in for the UNet: predicts zeros, so the loss is the mean square of the target."""

    def forward(self, sample, *args, **kwargs):
        return SimpleNamespace(sample=torch.zeros_like(sample))


@pytest.mark.parametrize("prediction_type, zero_snr", [("epsilon", False), ("v_prediction", True)])
def test_trainer_regresses_the_schedules_target(prediction_type, zero_snr):
    arch = ARCHITECTURES["tiny"]
    te = build_text_encoder(arch["text_encoder"], 512, seed=0)
    unet = build_unet(arch["unet"], text_hidden_size=arch["text_encoder"].hidden_size, image_size=64, seed=0)
    trainer = DiffusionTrainer(unet, te, image_size=64, device=torch.device("cpu"), ema_decay=None,
                               scheduler_config=scheduler_config(prediction_type, zero_snr))
    trainer.unet = Constant()
    g = torch.Generator().manual_seed(0)
    latents, noise = 3 * torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    ids = torch.ones(2, 256, dtype=torch.long)
    positions = torch.arange(256).expand(2, 256)
    loss = trainer.loss(latents, ids, torch.ones_like(ids), positions, noise=noise,
                        timesteps=torch.tensor([1099, 1099]), weighted=False)
    # at the last timestep epsilon's target is the noise; v's, on a zero-SNR schedule, is minus the clean latents
    expected = noise if prediction_type == "epsilon" else -latents
    assert float(loss) == pytest.approx(float(expected.pow(2).mean()), rel=1e-5)


def test_options_pair_zero_snr_with_v_prediction_and_default_the_weighting():
    assert config_from_args(["--out", "x"]).min_snr_gamma == 5.0
    v = config_from_args(["--out", "x", "--prediction-type", "v_prediction", "--zero-terminal-snr"])
    assert (v.prediction_type, v.zero_terminal_snr, v.min_snr_gamma) == ("v_prediction", True, None)
    assert config_from_args(["--out", "x", "--prediction-type", "v_prediction", "--min-snr-gamma", "3"]
                            ).min_snr_gamma == 3.0
    with pytest.raises(SystemExit):
        config_from_args(["--out", "x", "--zero-terminal-snr"])
    for bad in ("nan", "-1", "inf"):
        with pytest.raises(SystemExit):
            config_from_args(["--out", "x", "--min-snr-gamma", bad])
