"""Every API gives the pixels ``kolors generate`` gives for the same settings and seed, and batched jobs give the
pixels of their single runs (PNG decoded, at most 1/255 apart)."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys

import numpy as np
import openai
import pytest
import webuiapi
from PIL import Image

from conftest import SRC, wait_job

SETTINGS = {"prompt": "a red circle", "seed": 7, "steps": 5, "guidance": 5.0, "width": 128, "height": 128}


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and int(np.abs(a - b).max()) <= 1


@pytest.fixture(scope="module")
def cli_image(tmp_path_factory) -> np.ndarray:
    out = tmp_path_factory.mktemp("cli") / "cli.png"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    env.pop("KOLORS_MODEL", None)
    subprocess.run([sys.executable, "-m", "kolors", "generate", SETTINGS["prompt"], "--seed", "7", "--steps", "5",
                    "--guidance", "5", "--width", "128", "--height", "128", "--scheduler", "euler", "-o", str(out),
                    "-q"], check=True, env=env, timeout=300)
    return _pixels(out.read_bytes())


def test_native_equals_the_cli(client, cli_image):
    job = wait_job(client, client.post("/api/v1/jobs", json={**SETTINGS, "scheduler": "euler"}).json()["id"])
    assert _close(_pixels(client.get(job["images"][0]["url"]).content), cli_image)


def test_openai_equals_the_cli(server, cli_image):
    oa = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    result = oa.images.generate(prompt=SETTINGS["prompt"], size="128x128", response_format="b64_json",
                                extra_body={"seed": 7, "steps": 5, "guidance": 5.0, "scheduler": "euler"})
    assert _close(_pixels(base64.b64decode(result.data[0].b64_json)), cli_image)


def test_a1111_equals_the_cli(server, cli_image):
    api = webuiapi.WebUIApi(baseurl=f"{server.url}/sdapi/v1")
    result = api.txt2img(prompt=SETTINGS["prompt"], seed=7, steps=5, cfg_scale=5, width=128, height=128,
                         sampler_name="Euler")
    buffer = io.BytesIO()
    result.images[0].save(buffer, format="PNG")
    assert _close(_pixels(buffer.getvalue()), cli_image)


def test_queued_jobs_with_equal_settings_run_as_one_batch_with_their_single_run_pixels(client):
    blocker = client.post("/api/v1/jobs", json={"prompt": "ahead", "seed": 1, "steps": 25, "width": 64,
                                                "height": 64}).json()["id"]
    prompts = [("a red circle", 1), ("a blue square", 2), ("一个绿色的三角形", 3)]
    batched = [client.post("/api/v1/jobs", json={"prompt": p, "seed": s, "steps": 4}).json()["id"]
               for p, s in prompts]
    wait_job(client, blocker)
    jobs = [wait_job(client, j) for j in batched]
    assert len({j["started"] for j in jobs}) == 1  # claimed together
    metrics = client.get("/metrics").text
    assert "kolors_batch_jobs_bucket{le=\"4.0\"}" in metrics
    for (prompt, seed), job in zip(prompts, jobs, strict=True):
        single = wait_job(client, client.post("/api/v1/jobs", json={"prompt": prompt, "seed": seed,
                                                                     "steps": 4}).json()["id"])
        a = _pixels(client.get(job["images"][0]["url"]).content)
        b = _pixels(client.get(single["images"][0]["url"]).content)
        assert _close(a, b), int(np.abs(a - b).max())
