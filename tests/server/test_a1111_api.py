"""AUTOMATIC1111's /sdapi/v1 through the ``webuiapi`` client package, against a live server."""

from __future__ import annotations

import threading
import time

import pytest
import webuiapi
from PIL import Image


@pytest.fixture(scope="module")
def api(server):
    return webuiapi.WebUIApi(baseurl=f"{server.url}/sdapi/v1", sampler="Euler", steps=4)


def test_txt2img(api):
    result = api.txt2img(prompt="a red circle", negative_prompt="blurry", seed=21, cfg_scale=5, width=128,
                         height=96, batch_size=2, sampler_name="Euler a")
    assert [im.size for im in result.images] == [(128, 96), (128, 96)]
    assert result.info["all_seeds"] == [21, 22] and result.info["sampler_name"] == "Euler a"
    assert result.info["infotexts"][1].startswith("a red circle\nNegative prompt: blurry\nSteps: 4, Sampler: Euler a")
    assert "Seed: 22" in result.images[1].info["parameters"]
    assert result.parameters["prompt"] == "a red circle" and result.parameters["batch_size"] == 2


def test_img2img_with_a_mask_repaints_the_white_part(api):
    image = Image.new("RGB", (128, 128), (30, 30, 200))
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (32, 32, 96, 96))
    result = api.img2img(images=[image], mask_image=mask, prompt="a red circle", seed=3, denoising_strength=0.9,
                         width=128, height=128, mask_blur=0)
    out = result.images[0].convert("RGB")
    assert out.getpixel((4, 4)) == (30, 30, 200) and out.getpixel((64, 64)) != (30, 30, 200)
    assert result.info["denoising_strength"] == 0.9
    inverted = api.img2img(images=[image], mask_image=mask, prompt="a red circle", seed=3, denoising_strength=0.9,
                           width=128, height=128, mask_blur=0, inpainting_mask_invert=1).images[0].convert("RGB")
    assert inverted.getpixel((64, 64)) == (30, 30, 200) and inverted.getpixel((4, 4)) != (30, 30, 200)


def test_progress_while_a_job_runs_and_interrupt(api):
    answers = []
    runner = threading.Thread(target=lambda: answers.append(api.txt2img(prompt="long", seed=1, steps=150)))
    runner.start()
    progress = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        progress = api.get_progress()
        if progress["state"]["sampling_step"] >= 2:
            break
        time.sleep(0.05)
    assert progress["state"]["sampling_steps"] == 150 and 0 < progress["progress"] < 1
    assert progress["eta_relative"] > 0 and progress["state"]["job"].startswith("job_")
    api.interrupt()
    runner.join(30)
    assert not runner.is_alive()
    assert answers[0].images == [] and answers[0].info["interrupted"] is True
    assert api.get_progress()["progress"] == 0.0


def test_samplers_models_options(api):
    names = [s["name"] for s in api.get_samplers()]
    assert {"Euler", "Euler a", "DPM++ 2M", "DDIM", "UniPC"} <= set(names)
    assert api.get_sd_models()[0]["title"]
    api.set_options({"sd_model_checkpoint": "kolors-built-in", "samples_format": "png"})
    assert api.get_options()["sd_model_checkpoint"] == "kolors-built-in"


def test_unknown_sampler_is_a_422(server):
    import httpx

    answer = httpx.post(f"{server.url}/sdapi/v1/txt2img", json={"prompt": "x", "sampler_name": "Heun"})
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("sampler 'Heun' not found: use one of")
