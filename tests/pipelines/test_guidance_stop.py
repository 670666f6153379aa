"""Classifier-free guidance over the first part of the steps only (``guidance_stop``), as diffusers' guiders do."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers.guiders import ClassifierFreeGuidance

from kolors.diffusion.denoise import denoise
from kolors.metadata import format_parameters, parse_parameters
from kolors.pipelines.legacy import Text2ImagePipeline
from kolors.request import GenerationRequest, InvalidParameterError


class _RowsUNet(torch.nn.Module):
    """Unconditional rows predict -1 - t/1000, conditional rows 2 + t/1000: every step's guided value is known."""

    def forward(self, sample, t, encoder_hidden_states, added_cond_kwargs, return_dict=False, **kwargs):
        n = sample.shape[0] // 2
        value = torch.cat([torch.full_like(sample[:n], -1.0), torch.full_like(sample[n:], 2.0)]) + float(t) / 1000
        return (value,)


class _RecordingScheduler:
    def __init__(self):
        self.seen = []

    def scale_model_input(self, sample, t):
        return sample

    def step(self, noise, t, latents, return_dict=False):
        self.seen.append(noise.clone())
        return (latents,)


@pytest.mark.parametrize("steps", [4, 25])
@pytest.mark.parametrize("stop", [1.0, 0.5, 0.3, 0.0])
def test_each_step_is_guided_exactly_when_diffusers_guider_guides_it(steps, stop):
    scheduler, timesteps = _RecordingScheduler(), torch.linspace(999, 0, steps).round().long()
    latents = torch.zeros(2, 4, 2, 2)
    context = torch.zeros(4, 3, 8)
    denoise(_RowsUNet(), scheduler, latents, timesteps, context, {}, guidance=5.0, guidance_stop=stop,
            generators=[torch.Generator().manual_seed(0)] * 2)
    guider = ClassifierFreeGuidance(guidance_scale=5.0, stop=stop)
    for i, (t, got) in enumerate(zip(timesteps, scheduler.seen)):
        guider.set_state(step=i, num_inference_steps=steps, timestep=t)
        cond, uncond = torch.full_like(latents, 2.0) + float(t) / 1000, torch.full_like(latents, -1.0) + float(t) / 1000
        assert torch.allclose(got, guider.forward(cond, uncond).pred), (i, got.flatten()[0])
    guided = sum(not torch.allclose(got, torch.full_like(got, 2.0) + float(t) / 1000)
                 for t, got in zip(timesteps, scheduler.seen))
    assert guided == int(stop * steps)


@pytest.fixture(scope="module")
def ours(tiny_kolors_diffusers):
    return Text2ImagePipeline.from_pretrained(tiny_kolors_diffusers, device="cpu", dtype="float32")


def test_a_pipeline_guides_only_the_first_part_records_it_and_takes_the_models_default(ours, monkeypatch):
    kw = dict(width=32, height=32, steps=4, guidance=5.0, seed=3, progress=False)
    plain = ours("一只红色的猫", **kw)
    assert plain.parameters[0]["guidance_stop"] == 1.0  # every step guided: the Kolors default
    assert np.array_equal(ours("一只红色的猫", guidance_stop=1.0, **kw).pixels, plain.pixels)
    half = ours("一只红色的猫", guidance_stop=0.5, **kw)
    assert np.abs(half.pixels - plain.pixels).max() > 1e-3
    assert half.parameters[0]["guidance_stop"] == 0.5
    text = format_parameters(half.parameters[0])
    assert "CFG scale: 5.0, CFG stop: 0.5," in text and "CFG stop" not in format_parameters(plain.parameters[0])
    assert parse_parameters(text)["guidance_stop"] == 0.5
    # a model folder's kolors_defaults.json may set it (the built-in model does)
    monkeypatch.setattr(ours, "defaults", dataclasses.replace(ours.defaults, guidance_stop=0.5))
    by_default = ours("一只红色的猫", **kw)
    assert by_default.parameters[0]["guidance_stop"] == 0.5 and np.array_equal(by_default.pixels, half.pixels)


@pytest.mark.parametrize("value", [1.5, -0.1, float("nan"), "half"])
def test_a_stop_outside_0_to_1_is_refused_in_one_line(value):
    with pytest.raises(InvalidParameterError, match="guidance-stop must be"):
        GenerationRequest("a cat", guidance_stop=value).validate()
