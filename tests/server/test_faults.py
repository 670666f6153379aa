"""Nothing accepted is lost: kill -9 with jobs queued and running, and a burst of submissions on a small queue."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx
import pytest

from helpers.server_process import Server, wait_job


def _progress_step(client: httpx.Client, job_id: str) -> int:
    progress = client.get(f"/api/v1/jobs/{job_id}").json()["progress"]
    return progress["step"] if progress else 0


def test_kill_9_with_ten_queued_and_one_running_loses_nothing(tmp_path):
    data = tmp_path / "data"
    first = Server(data)
    try:
        with httpx.Client(base_url=first.url, timeout=30) as c:
            running = c.post("/api/v1/jobs", json={"prompt": "long", "seed": 1, "steps": 20}).json()["id"]
            queued = [c.post("/api/v1/jobs", json={"prompt": f"job {i}", "seed": i, "steps": 2,
                                                   "width": 64 + 8 * i, "height": 64}).json()["id"]
                      for i in range(10)]
            deadline = time.monotonic() + 60
            while _progress_step(c, running) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert c.get(f"/api/v1/jobs/{running}").json()["status"] == "running"
            assert all(c.get(f"/api/v1/jobs/{j}").json()["status"] == "queued" for j in queued)
        first.kill()
    finally:
        first.stop()
    second = Server(data)
    try:
        with httpx.Client(base_url=second.url, timeout=30) as c:
            jobs = {j: wait_job(c, j, timeout=120) for j in [running, *queued]}
            assert all(job["status"] == "succeeded" for job in jobs.values()), jobs
            assert jobs[running]["attempts"] == 2  # run again after the kill
            assert all(jobs[j]["attempts"] == 1 for j in queued)
            for i, j in enumerate(queued):
                assert jobs[j]["images"][0]["parameters"]["width"] == 64 + 8 * i
                assert c.get(jobs[j]["images"][0]["url"]).status_code == 200
            # a graceful stop (SIGTERM) puts the running job back in the queue, its attempt not counted
            again = c.post("/api/v1/jobs", json={"prompt": "long", "seed": 2, "steps": 100}).json()["id"]
            deadline = time.monotonic() + 60
            while _progress_step(c, again) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
        second.stop()
        with sqlite3.connect(data / "kolors.db") as db:
            assert db.execute("SELECT status, attempts FROM jobs WHERE id = ?", (again,)).fetchone() == ("queued", 0)
    finally:
        second.stop()


async def _burst(url: str, count: int, timeout: float) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as c:
        body = {"prompt": "a red circle", "size": "64x64", "response_format": "b64_json", "steps": 2}
        return await asyncio.gather(*[c.post("/v1/images/generations", json={**body, "seed": i})
                                      for i in range(count)])


def _check_burst(srv: Server, count: int) -> tuple[int, int]:
    answers = asyncio.run(_burst(srv.url, count, timeout=120))
    ok = [a for a in answers if a.status_code == 200]
    full = [a for a in answers if a.status_code == 429]
    assert len(ok) + len(full) == count, [a.text for a in answers if a.status_code not in (200, 429)]
    assert all(len(a.json()["data"]) == 1 for a in ok) and all(int(a.headers["retry-after"]) >= 1 for a in full)
    assert all(a.json()["error"]["code"] == "queue_full" for a in full)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        jobs = c.get("/api/v1/jobs", params={"limit": 500}).json()["jobs"]
    assert all(j["status"] == "succeeded" and j["attempts"] == 1 for j in jobs)  # none lost, none run twice
    return len(ok), len(jobs)


@pytest.fixture
def small_queue_server(tmp_path):
    srv = Server(tmp_path / "data", "--max-queue", "10", "--quiet")
    yield srv
    srv.stop()


def test_fifty_concurrent_submissions_on_a_queue_of_ten(small_queue_server):
    done, jobs = _check_burst(small_queue_server, 50)
    assert done == jobs >= 10


@pytest.mark.slow
def test_memory_stays_flat_over_200_requests(small_queue_server):
    import psutil

    process = psutil.Process(small_queue_server.process.pid)

    def rounds(n: int) -> int:  # n rounds of 10 concurrent requests (the queue's size: all get images)
        done = 0
        for _ in range(n):
            done += sum(a.status_code == 200 for a in asyncio.run(_burst(small_queue_server.url, 10, timeout=120)))
        return done

    assert rounds(5) == 50  # warm-up
    before = process.memory_info().rss
    assert rounds(20) == 200
    growth = process.memory_info().rss - before
    assert growth < 64 * 2**20, f"server memory grew {growth / 2**20:.0f} MiB over 200 requests"
