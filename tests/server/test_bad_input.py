"""Bad input gets a 4xx with one clear line (never a 5xx), and the server stays up."""

from __future__ import annotations

import io
import os

import httpx
import pytest
from PIL import Image

from helpers.server_process import Server, wait_job


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    (folder / "style.safetensors").write_bytes(b"not really a LoRA")
    (folder.parent / "outside.safetensors").write_bytes(b"x")
    os.symlink(folder.parent / "outside.safetensors", folder / "link.safetensors")
    return folder


@pytest.fixture(scope="module")
def bad_client(tmp_path_factory, lora_dir):
    srv = Server(tmp_path_factory.mktemp("bad") / "data", "--lora-dir", str(lora_dir), "--max-upload-mb", "0.1")
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        yield c
    srv.stop()


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


JOB_CASES = [
    ({"prompt": "x", "width": 100}, "width 100 is not a multiple of 8: try 96"),
    ({"prompt": "x", "width": -8}, "width must be a positive number of pixels, got -8"),
    ({"prompt": "x", "width": "wide"}, "width: Input should be a valid integer"),
    ({"prompt": "x", "width": 4096, "height": 4096}, "more than this server's limit of 4194304 pixels"),
    ({"prompt": "x", "num_images": 0}, "num-images must be between 1 and 256, got 0"),
    ({"prompt": "x", "num_images": 10**9}, "num-images must be between 1 and 256"),
    ({"prompt": "x", "num_images": 9}, "at most 8 images per request on this server, got 9"),
    ({"prompt": "x", "steps": 151}, "steps must be at most 150 on this server"),
    ({"prompt": "x" * 4001}, "more than this server's limit of 4000"),
    ({"prompt": 5}, "prompt: Input should be a valid string"),
    ({"steps": 4}, "prompt is missing"),
    ({"prompt": "x", "scheduler": "heun"}, "unknown scheduler 'heun'"),
    ({"prompt": "x", "colour": "red"}, "unknown setting 'colour'"),
    ({"prompt": "x", "loras": [{"name": "nope"}]}, "unknown LoRA 'nope.safetensors': this server has "
                                                   "link.safetensors, style.safetensors"),
    ({"prompt": "x", "loras": [{"name": "../outside.safetensors"}]}, "must be a plain name"),
    ({"prompt": "x", "loras": [{"name": "link.safetensors"}]}, "leads outside the server's LoRA folder"),
    ({"prompt": "x", "loras": [{"path": "/etc/passwd"}]}, "loras.0.name"),
    ({"prompt": "x", "init_image": "/etc/passwd"}, "init_image must be \"upload:<id>\""),
    ({"prompt": "x", "init_image": "upload:up_0123456789abcdef"}, "no upload up_0123456789abcdef"),
    ({"prompt": "x", "init_image": "job:job_0123456789abcdef/0"}, "has no image 0"),
    ({"prompt": "x", "controls": [{"type": "canny", "image": "upload:../../x"}]}, "must be \"upload:<id>\""),
    ({"prompt": "x", "controls": [{"type": "canny", "controlnet": "../cn"}]}, "no ControlNet folder"),
    ({"prompt": "x", "ip_adapter": {"model": "../ip", "image": "x"}}, "must be \"upload:<id>\""),
]


@pytest.mark.parametrize(("body", "message"), JOB_CASES, ids=[c[1][:30] for c in JOB_CASES])
def test_bad_jobs_are_400_with_a_clear_message(bad_client, body, message):
    answer = bad_client.post("/api/v1/jobs", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert message in error["message"] and "\n" not in error["message"]
    assert error["type"] == "invalid_request_error"


def test_bad_bodies_and_uploads(bad_client):
    cases = [
        (bad_client.post("/api/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}),
         400, "not valid JSON"),
        (bad_client.post("/api/v1/jobs", json=["a", "list"]), 400, "valid dictionary"),
        (bad_client.post("/api/v1/uploads", files={"file": ("x.png", b"hello", "image/png")}), 400,
         "not an image file"),
        (bad_client.post("/api/v1/uploads", files={"file": ("x.png", os.urandom(200_000), "image/png")}), 400,
         "more than the limit of 104857"),
        (bad_client.post("/api/v1/uploads", files={"file": ("x.png", _png((10000, 10000), "1"), "image/png")}),
         400, "pixels"),
        (bad_client.post("/api/v1/uploads", files={"file": ("x.png", _png((64, 64))[:-30], "image/png")}), 400,
         "cannot read upload: "),
        (bad_client.post("/api/v1/uploads", content=b"x" * 2_000_000, headers={"content-type": "multipart/form-data"}),
         413, "larger than this server's limit"),
        (bad_client.get("/api/v1/jobs/job_nope"), 404, "no job 'job_nope'"),
        (bad_client.get("/api/v1/jobs", params={"status": "done"}), 400, "unknown status 'done'"),
        (bad_client.get("/api/v1/nowhere"), 404, "no such endpoint"),
        (bad_client.post("/v1/images/generations", json={"prompt": "x", "size": "big"}), 400, "WIDTHxHEIGHT"),
        (bad_client.post("/v1/images/generations", json={"prompt": "x", "response_format": "gif"}), 400,
         "response_format"),
    ]
    for answer, status, message in cases:
        assert answer.status_code == status, (message, answer.text)
        assert message in answer.json()["error"]["message"], answer.text
    a1111 = bad_client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": "many"})
    assert a1111.status_code == 422 and "steps" in a1111.json()["detail"]
    bad_image = bad_client.post("/sdapi/v1/img2img", json={"prompt": "x", "init_images": ["bm90IGFuIGltYWdl"]})
    assert bad_image.status_code == 422 and "not an image file" in bad_image.json()["detail"]
    assert bad_client.get("/health").json() == {"status": "ok"}


def test_a_broken_lora_file_fails_the_job_with_the_reason(bad_client):
    job_id = bad_client.post("/api/v1/jobs", json={"prompt": "x", "steps": 2,
                                                   "loras": [{"name": "style"}]}).json()["id"]
    job = wait_job(bad_client, job_id)
    assert job["status"] == "failed" and "style.safetensors" in job["error"]
    assert bad_client.get("/ready").status_code == 200
