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
    """Unconditional rows (context 0) predict -1 + t/1000, conditional rows (context 1) 2 + t/1000: every step's
    guided value is known. Records how many rows each call ran."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def forward(self, sample, t, encoder_hidden_states, added_cond_kwargs, return_dict=False, **kwargs):
        self.rows.append(sample.shape[0])
        cond = encoder_hidden_states[:, 0, 0].reshape(-1, 1, 1, 1)
        return (torch.where(cond > 0, 2.0, -1.0).expand_as(sample) + float(t) / 1000,)


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
    unet, scheduler, timesteps = _RowsUNet(), _RecordingScheduler(), torch.linspace(999, 0, steps).round().long()
    latents = torch.zeros(2, 4, 2, 2)
    context = torch.cat([torch.zeros(2, 3, 8), torch.ones(2, 3, 8)])  # [uncond, uncond, cond, cond]
    added = {"text_embeds": torch.arange(4.0).reshape(4, 1), "time_ids": torch.zeros(4, 6)}
    denoise(unet, scheduler, latents, timesteps, context, added, guidance=5.0, guidance_stop=stop,
            generators=[torch.Generator().manual_seed(0)] * 2)
    guider = ClassifierFreeGuidance(guidance_scale=5.0, stop=stop)
    for i, (t, got) in enumerate(zip(timesteps, scheduler.seen)):
        guider.set_state(step=i, num_inference_steps=steps, timestep=t)
        cond, uncond = torch.full_like(latents, 2.0) + float(t) / 1000, torch.full_like(latents, -1.0) + float(t) / 1000
        assert torch.allclose(got, guider.forward(cond, uncond).pred), (i, got.flatten()[0])
        # the unconditional rows run only while guided (diffusers' guider: num_conditions)
        assert unet.rows[i] == 2 * guider.num_conditions, (i, unet.rows[i])
    assert unet.rows.count(4) == int(stop * steps)


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


@pytest.mark.parametrize("task", ["text-to-image", "controlnet", "inpaint", "pag"])
def test_unconditional_rows_dropped_after_the_stop_give_the_images_of_running_them(ours, controlnet_dir, task,
                                                                                   monkeypatch):
    """After the stop the loop runs the conditional rows only (ControlNet residuals, inpainting's known region
    follow); the images equal those of a loop that still runs the unconditional rows and leaves them unused."""
    from PIL import Image

    import kolors.pipelines.pipeline as pipeline_module
    from kolors.diffusion.conditioning import Conditioner
    from kolors.request import Control

    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    kw = dict(width=32, height=32, steps=6, guidance=5.0, guidance_stop=0.5, seed=2, num_images=2, progress=False)
    extra = {"text-to-image": {}, "pag": {"pag_scale": 2.0},
             "controlnet": {"controls": [Control("canny", picture, controlnet=str(controlnet_dir))]},
             "inpaint": {"task": "inpaint", "init_image": picture, "mask": Image.fromarray(mask)}}[task]
    calls = []
    real = ours.components.unet.forward
    monkeypatch.setattr(ours.components.unet, "forward", lambda sample, *a, **k: (calls.append(sample.shape[0]),
                                                                                     real(sample, *a, **k))[1])
    dropped = ours("一只红色的猫", **kw, **extra)
    rows_dropped = list(calls)
    class HoldRows(Conditioner):
        follows_rows = False

    real_denoise = pipeline_module.denoise
    monkeypatch.setattr(pipeline_module, "denoise", lambda *a, conditioners=(), **k: real_denoise(
        *a, conditioners=[*conditioners, HoldRows()], **k))
    calls.clear()
    kept = ours("一只红色的猫", **kw, **extra)
    steps = len(calls)
    guided = int(0.5 * steps)
    if task == "pag":  # PAG holds the batch layout ([uncond, cond, perturbed]) for the whole loop
        assert rows_dropped == calls == [6] * steps
    else:
        assert rows_dropped == [4] * guided + [2] * (steps - guided) and calls == [4] * steps
    assert np.abs(dropped.pixels - kept.pixels).max() <= 2e-3


@pytest.mark.parametrize("stop", [0.5, 0.0])
def test_the_recipes_evaluation_stops_diffusers_guidance_where_kolors_does(ours, tiny_kolors_diffusers, stop):
    """The recipe evaluates with diffusers' KolorsPipeline, whose guidance runs every step: a step-end callback turns
    it off after the same steps (and keeps the conditional half of the batch), so an ``--eval-grid`` point with a
    stop scores the images kolors makes with that ``guidance_stop``."""
    from diffusers import KolorsPipeline

    from kolors.recipe.evaluate import generate

    from kolors.schedulers import make_scheduler

    theirs = KolorsPipeline.from_pretrained(str(tiny_kolors_diffusers), variant="fp16", dtype=torch.float32)
    theirs.scheduler = make_scheduler("default", ours.components.scheduler)
    theirs.set_progress_bar_config(disable=True)
    size = theirs.default_sample_size * theirs.vae_scale_factor  # what generate() leaves diffusers to choose
    kw = dict(steps=4, guidance=5.0, batch_size=2, device=torch.device("cpu"))
    prompts, seeds = ["一只红色的猫", "a blue dog"], [3, 4]
    stopped = generate(theirs, prompts, seeds, guidance_stop=stop, **kw)
    every = generate(theirs, prompts, seeds, **kw)
    assert np.abs(stopped.astype(int) - every.astype(int)).max() > 2
    for prompt, seed, image in zip(prompts, seeds, stopped):
        mine = ours(prompt, width=size, height=size, steps=4, guidance=5.0, guidance_stop=stop, seed=seed,
                    progress=False)
        assert np.abs((mine.pixels[0] * 255).round() - image.astype(int)).max() <= 1
