"""The native job API against a live server: jobs, SSE, cancel, uploads, PNG metadata."""

from __future__ import annotations

import io
import json
import threading
import time

import httpx
from PIL import Image

from helpers.server_process import wait_job


def _events(client: httpx.Client, job_id: str) -> list[tuple[str, dict]]:
    events, name = [], None
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events", timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


def test_job_runs_and_its_png_carries_the_parameters(client):
    answer = client.post("/api/v1/jobs", json={"prompt": "a red circle", "seed": 5, "steps": 4, "num_images": 2})
    assert answer.status_code == 202, answer.text
    submitted = answer.json()
    assert submitted["status"] == "queued" and submitted["id"].startswith("job_") and submitted["position"] >= 0
    job = wait_job(client, submitted["id"])
    assert job["status"] == "succeeded", job
    assert [im["seed"] for im in job["images"]] == [5, 6]
    assert job["images"][1]["parameters"]["steps"] == 4
    assert "Steps: 4" in job["images"][0]["infotext"] and "--seed 6" in job["images"][1]["command"]
    png = client.get(job["images"][1]["url"])
    assert png.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert json.loads(image.info["kolors"])["seed"] == 6 and "Seed: 6" in image.info["parameters"]
    listed = client.get("/api/v1/jobs", params={"status": "succeeded", "limit": 5}).json()["jobs"]
    assert submitted["id"] in [j["id"] for j in listed]


def test_events_arrive_in_order_and_end_with_the_job(client):
    # a long job ahead keeps ours queued, so the stream starts with its position
    ahead = client.post("/api/v1/jobs", json={"prompt": "ahead", "seed": 1, "steps": 30, "width": 64,
                                              "height": 64}).json()
    job_id = client.post("/api/v1/jobs", json={"prompt": "a blue square", "seed": 1, "steps": 6}).json()["id"]
    events = _events(client, job_id)
    names = [name for name, _ in events]
    assert names[0] == "queued" and events[0][1]["position"] >= 0
    assert names[-1] == "succeeded" and events[-1][1]["id"] == job_id and events[-1][1]["images"]
    started = names.index("started")
    steps = [data["step"] for name, data in events if name == "progress"]
    assert all(name == "queued" for name in names[:started])
    assert names[started + 1 : -1] == ["progress"] * len(steps)
    assert steps == sorted(set(steps)) and steps[-1] == 6 and len(steps) >= 3
    last = [data for name, data in events if name == "progress"][-1]
    assert last["fraction"] == 1.0 and last["steps"] == 6
    assert any("preview" in data for name, data in events if name == "progress")
    wait_job(client, ahead["id"])


def test_cancel_stops_a_running_job_within_one_step(client):
    job_id = client.post("/api/v1/jobs", json={"prompt": "long", "seed": 3, "steps": 150}).json()["id"]
    seen: list[dict] = []

    def follow() -> None:
        seen.extend(_events(client, job_id))

    follower = threading.Thread(target=follow)
    follower.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["progress"] and job["progress"]["step"] >= 3:
            break
        time.sleep(0.05)
    cancelled = client.post(f"/api/v1/jobs/{job_id}/cancel").json()
    at_cancel = cancelled["progress"]["step"]
    follower.join(60)
    final = seen[-1]
    assert final[0] == "cancelled" and final[1]["status"] == "cancelled"
    last_step = max(data["step"] for name, data in seen if name == "progress")
    assert last_step <= at_cancel + 1, (at_cancel, last_step)
    assert final[1]["error"] == f"cancelled at step {last_step}"


def test_cancel_a_queued_job_at_once(client):
    ahead = client.post("/api/v1/jobs", json={"prompt": "ahead", "seed": 1, "steps": 40}).json()
    queued = client.post("/api/v1/jobs", json={"prompt": "waiting", "seed": 1, "steps": 4, "width": 64}).json()
    job = client.post(f"/api/v1/jobs/{queued['id']}/cancel").json()
    assert job["status"] == "cancelled" and job["images"] == []
    assert _events(client, queued["id"])[-1][0] == "cancelled"
    client.post(f"/api/v1/jobs/{ahead['id']}/cancel")


def test_uploads_feed_image_to_image_and_inpainting(client):
    buffer = io.BytesIO()
    Image.new("RGB", (128, 128), (200, 30, 30)).save(buffer, format="PNG")
    up = client.post("/api/v1/uploads", files={"file": ("red.png", buffer.getvalue(), "image/png")})
    assert up.status_code == 201, up.text
    upload = up.json()
    assert (upload["width"], upload["height"], upload["name"]) == (128, 128, "red.png")
    assert client.get(f"/api/v1/uploads/{upload['id']}").content == buffer.getvalue()
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (32, 32, 96, 96))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    mask_id = client.post("/api/v1/uploads", files={"file": ("m.png", buffer.getvalue(), "image/png")}).json()["id"]
    job_id = client.post("/api/v1/jobs", json={"prompt": "a blue circle", "seed": 2, "steps": 4,
                                               "init_image": f"upload:{upload['id']}",
                                               "mask": f"upload:{mask_id}"}).json()["id"]
    job = wait_job(client, job_id)
    assert job["status"] == "succeeded" and job["images"][0]["parameters"]["task"] == "inpaint"
    # the command to make it again names the inputs as the client sent them, not by their stored upload id
    assert job["images"][0]["command"].startswith("kolors inpaint 'a blue circle' --image red.png --mask m.png ")
    out = Image.open(io.BytesIO(client.get(job["images"][0]["url"]).content)).convert("RGB")
    assert out.getpixel((5, 5)) == (200, 30, 30)  # outside the mask: kept exactly
    # a result feeds the next request
    again = client.post("/api/v1/jobs", json={"prompt": "x", "seed": 1, "steps": 4, "strength": 0.5,
                                              "init_image": f"job:{job_id}/0"}).json()["id"]
    assert wait_job(client, again)["status"] == "succeeded"


def test_info_tokenize_health_ready_metrics(client):
    info = client.get("/api/v1/info").json()
    assert info["builtin"] and info["defaults"]["width"] == 128 and info["token_limit"] == 256
    assert "euler" in info["schedulers"] and info["limits"]["max_images"] == 8 and info["auth"] is False
    # a control without a named ControlNet uses the built-in model's canny one; there is no depth or pose one
    assert info["default_controlnets"] == {"canny": "kolors-shapes-small-controlnet-canny"}
    tokens = client.post("/api/v1/tokenize", json={"text": "a red circle"}).json()
    assert 3 <= tokens["tokens"] < 20 and tokens["dropped"] == 0 and tokens["limit"] == 256
    long = client.post("/api/v1/tokenize", json={"text": "红色 " * 400}).json()
    assert long["dropped"] == long["tokens"] - 256 > 0
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    metrics = client.get("/metrics").text
    assert "kolors_queue_depth" in metrics and 'kolors_jobs{status="succeeded"}' in metrics
    assert "kolors_images_generated_total" in metrics
    assert client.get("/openapi.json").json()["paths"]["/api/v1/jobs"]
    assert client.get("/docs").status_code == 200


def test_parameters_of_a_png_and_a_control_map(client):
    job_id = client.post("/api/v1/jobs", json={"prompt": "a green circle", "seed": 9, "steps": 3}).json()["id"]
    job = wait_job(client, job_id)
    png = client.get(job["images"][0]["url"]).content
    answer = client.post("/api/v1/parameters", files={"file": ("x.png", png, "image/png")}).json()
    assert answer["source"] == "kolors"
    assert answer["request"]["prompt"] == "a green circle" and answer["request"]["seed"] == 9
    buffer = io.BytesIO()
    image = Image.new("RGB", (64, 64), "white")
    image.paste((0, 0, 0), (16, 16, 48, 48))
    image.save(buffer, format="PNG")
    up = client.post("/api/v1/uploads", files={"file": ("s.png", buffer.getvalue(), "image/png")}).json()
    edges = client.post("/api/v1/control-maps", json={"type": "canny", "image": f"upload:{up['id']}"})
    assert edges.headers["content-type"] == "image/png"
    edge_map = Image.open(io.BytesIO(edges.content)).convert("L")
    assert max(edge_map.getpixel((x, 30)) for x in range(13, 19)) > 128 and edge_map.getpixel((32, 32)) == 0
