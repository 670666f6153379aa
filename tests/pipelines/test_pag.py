"""Perturbed-attention guidance against diffusers' KolorsPAGPipeline on the same tiny checkpoint, fp32 on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import KolorsPAGPipeline
from PIL import Image

from kolors import KolorsError
from kolors.pipelines.legacy import Image2ImagePipeline
from kolors.pipelines.legacy import Text2ImagePipeline

STEPS = 4
W, H = 32, 24


@pytest.fixture(scope="module")
def ours(tiny_kolors_diffusers):
    return Text2ImagePipeline.from_pretrained(tiny_kolors_diffusers, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def img2img(ours):
    return Image2ImagePipeline(ours.components, device=ours.device, dtype=ours.dtype, model_name="tiny")


def _reference(folder, layers):
    ref = KolorsPAGPipeline.from_pretrained(folder, variant="fp16", torch_dtype=torch.float32,
                                            pag_applied_layers=layers)
    ref.set_progress_bar_config(disable=True)
    return ref


@pytest.mark.parametrize(("guidance", "layers"), [
    (5.0, "mid"), (1.0, "mid"), (5.0, ["down_blocks.1", "up_blocks.0.attentions.1"])])
def test_matches_diffusers_kolors_pag(ours, tiny_kolors_diffusers, guidance, layers):
    ref = _reference(tiny_kolors_diffusers, layers)
    want = ref("一只红色的猫坐在沙发上", negative_prompt="模糊", width=W, height=H, num_inference_steps=STEPS,
               guidance_scale=guidance, pag_scale=3.0, generator=torch.Generator("cpu").manual_seed(7),
               output_type="np").images
    got = ours("一只红色的猫坐在沙发上", "模糊", width=W, height=H, steps=STEPS, guidance=guidance, seed=7,
               pag_scale=3.0, pag_layers=layers, progress=False)
    diff = np.abs(got.pixels - want).max()
    print(f"PAG parity (guidance {guidance}, layers {layers}): max pixel difference {diff:.2e}")
    assert diff <= 1 / 255, diff
    plain = ours("一只红色的猫坐在沙发上", "模糊", width=W, height=H, steps=STEPS, guidance=guidance, seed=7,
                 progress=False)
    assert np.abs(plain.pixels - got.pixels).max() > 1e-3  # PAG changes the image
    params = got.parameters[0]
    assert params["pag_scale"] == 3.0
    assert params["pag_layers"] == ([layers] if isinstance(layers, str) else layers)
    assert "pag_scale" not in plain.parameters[0]


def test_processors_restored_and_image_to_image_accepts_pag(ours, img2img):
    before = {k: type(v) for k, v in ours.components.unet.attn_processors.items()}
    picture = Image.fromarray(np.full((H, W, 3), 128, np.uint8))
    result = img2img("a cat", picture, strength=0.5, steps=STEPS, seed=1, pag_scale=2.0, progress=False)
    assert result.parameters[0]["pag_scale"] == 2.0
    assert {k: type(v) for k, v in ours.components.unet.attn_processors.items()} == before


@pytest.mark.parametrize(("scale", "layers", "match"), [
    (-1.0, "mid", "pag-scale"), (2.0, "nowhere", "no self-attention"), (2.0, "(", "not a valid pattern")])
def test_bad_pag_settings_are_one_line_errors(img2img, scale, layers, match):
    picture = Image.fromarray(np.full((H, W, 3), 128, np.uint8))
    with pytest.raises(KolorsError, match=match):
        img2img("a cat", picture, steps=1, pag_scale=scale, pag_layers=layers, progress=False)



def test_pag_with_ip_adapter_plus(tiny_kolors_diffusers, tmp_path):
    """PAG on top of IP-Adapter layers: it runs, changes the image, and leaves the adapter's processors in place.

    (diffusers 0.42.1's KolorsPAGPipeline cannot serve as the reference here: with an IP-Adapter it iterates
    ``ip_adapter_image_embeds`` when only an image is given, and passes a tensor where its UNet wants a list.)
    """
    from helpers.tiny_ip_adapter import write_tiny_ip_adapter_plus
    from kolors.adapters.image_prompts import load_ip_adapter

    adapter = write_tiny_ip_adapter_plus(tmp_path)
    reference_image = Image.fromarray((np.random.RandomState(0).rand(30, 40, 3) * 255).astype(np.uint8))
    pipe = Text2ImagePipeline.from_pretrained(tiny_kolors_diffusers, device="cpu", dtype="float32")
    load_ip_adapter(pipe, adapter, reference_image, scale=0.7)
    before = {k: type(v) for k, v in pipe.components.unet.attn_processors.items()}
    plain = pipe("一只红色的猫", width=W, height=H, steps=STEPS, seed=2, progress=False)
    got = pipe("一只红色的猫", width=W, height=H, steps=STEPS, seed=2, pag_scale=2.0, progress=False)
    assert np.abs(got.pixels - plain.pixels).max() > 1e-3
    assert got.parameters[0]["pag_scale"] == 2.0 and "ip_adapter" in got.parameters[0]
    assert {k: type(v) for k, v in pipe.components.unet.attn_processors.items()} == before
