"""Image-to-image against diffusers' KolorsImg2ImgPipeline on the same tiny checkpoint, fp32 on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import KolorsImg2ImgPipeline
from PIL import Image

from kolors import KolorsError
from kolors.pipelines.legacy import Image2ImagePipeline
from kolors.schedulers import make_scheduler

STEPS = 6


@pytest.fixture(scope="module")
def ours(tiny_kolors_diffusers):
    return Image2ImagePipeline.from_pretrained(tiny_kolors_diffusers, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def reference(tiny_kolors_diffusers):
    ref = KolorsImg2ImgPipeline.from_pretrained(tiny_kolors_diffusers, variant="fp16", torch_dtype=torch.float32)
    ref.set_progress_bar_config(disable=True)
    return ref


@pytest.fixture(scope="module")
def picture():
    rng = np.random.RandomState(0)
    return Image.fromarray((rng.rand(48, 64, 3) * 255).astype(np.uint8))


@pytest.mark.parametrize("scheduler", ["default", "euler_a", "dpmpp_2m_karras"])
@pytest.mark.parametrize("strength", [0.3, 0.75, 1.0])
def test_matches_diffusers(ours, reference, picture, scheduler, strength):
    reference.scheduler = make_scheduler(scheduler, ours.components.scheduler)
    want = reference("一个红色的圆形", image=picture, strength=strength, num_inference_steps=STEPS,
                     guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(3), output_type="np").images
    got = ours("一个红色的圆形", picture, strength=strength, steps=STEPS, guidance=5.0, seed=3, scheduler=scheduler,
               progress=False)
    assert got.pixels.shape == want.shape == (1, 48, 64, 3)
    assert np.abs(got.pixels - want).max() <= 1e-3
    assert got.parameters[0]["strength"] == strength


def test_batch_image_equals_single_run_at_its_seed(ours, picture):
    batch = ours("a cat", picture, strength=0.6, steps=STEPS, seed=8, num_images=2, progress=False)
    single = ours("a cat", picture, strength=0.6, steps=STEPS, seed=9, progress=False)
    assert np.abs(batch.pixels[1] - single.pixels[0]).max() <= 1e-3


def test_strength_zero_is_the_vae_round_trip_and_low_strength_stays_near_it(ours, picture):
    kept = ours("a cat", picture, strength=0.0, steps=20, seed=1, progress=False).pixels[0]
    assert kept.shape == (48, 64, 3)
    low = ours("a cat", picture, strength=0.1, steps=20, seed=1, progress=False).pixels[0]
    high = ours("a cat", picture, strength=1.0, steps=20, seed=1, progress=False).pixels[0]
    assert np.abs(low - kept).mean() < np.abs(high - kept).mean()


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_strength_outside_unit_interval_is_rejected(ours, picture, strength):
    with pytest.raises(KolorsError, match="strength must be between 0 and 1"):
        ours("a cat", picture, strength=strength, progress=False)


def test_unreadable_image_is_named(ours, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(KolorsError, match="broken.png"):
        ours("a cat", bad, progress=False)
    with pytest.raises(KolorsError, match="not found"):
        ours("a cat", tmp_path / "missing.png", progress=False)
