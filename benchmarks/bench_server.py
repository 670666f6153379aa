"""Throughput and latency of ``kolors serve`` on the built-in model (CPU), with and without batching, and the
server's overhead per image over a direct ``Pipeline.generate`` call.

Usage (repo root):  PYTHONPATH=src python benchmarks/bench_server.py [--requests 48] [--steps 10]

For batching off (``--batch-images 1``) and on (``--batch-images 8``) it starts one server and, at concurrency 1,
4 and 16, sends ``--requests`` OpenAI generation requests (one image each, different prompts and seeds, same
settings) and times each from send to answer: requests/min, images/s, p50/p95 latency. The overhead is the
server's time per image at concurrency 1 without batching over a direct call's (same settings, ``--threads``
torch threads each), measured in alternating rounds with both processes alive, after a warm-up. Prints a markdown table last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SRC = Path(__file__).resolve().parents[1] / "src"
PROMPTS = ["a red circle", "a blue square", "一个绿色的三角形", "a yellow star", "两个紫色的圆", "an orange square"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, batch_images: int, threads: int) -> tuple[subprocess.Popen, str]:
    port = _port()
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    process = subprocess.Popen([sys.executable, "-m", "kolors", "serve", "--port", str(port), "--data-dir", str(data),
                                "--batch-images", str(batch_images), "--max-queue", "1000", "--no-previews",
                                "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit("the server did not become ready")


async def load(url: str, requests: int, concurrency: int, steps: int) -> dict[str, float]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(client: httpx.AsyncClient, i: int) -> None:
        async with gate:
            started = time.perf_counter()
            answer = await client.post("/v1/images/generations", json={
                "prompt": PROMPTS[i % len(PROMPTS)], "seed": i, "steps": steps, "response_format": "b64_json"})
            answer.raise_for_status()
            latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*[one(client, i) for i in range(requests)])
        wall = time.perf_counter() - started
    latencies.sort()
    return {"requests_per_min": 60 * requests / wall, "images_per_s": requests / wall,
            "p50_s": statistics.median(latencies), "p95_s": latencies[int(0.95 * (len(latencies) - 1))],
            "s_per_image": wall / requests}


class DirectRunner:
    """A process with the pipeline loaded that times direct ``Pipeline.generate`` calls on request (alive beside
    the server, idle while the server works, so both see the same machine)."""

    CODE = """
import sys, time, torch
torch.set_num_threads({threads})
from kolors import GenerationRequest, load_pipeline
pipe = load_pipeline()
prompts = {prompts!r}
pipe.generate(GenerationRequest(prompts[0], seed=0, steps={steps}), progress=False)
print("ready", flush=True)
for line in sys.stdin:
    runs = int(line)
    started = time.perf_counter()
    for i in range(runs):
        pipe.generate(GenerationRequest(prompts[i % len(prompts)], seed=i, steps={steps}), progress=False)
    print((time.perf_counter() - started) / runs, flush=True)
"""

    def __init__(self, steps: int, threads: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
        code = self.CODE.format(threads=threads, prompts=PROMPTS, steps=steps)
        self.process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, env=env)
        while self.process.stdout.readline().strip() != "ready":
            if self.process.poll() is not None:
                raise SystemExit("the direct pipeline process failed")

    def seconds_per_image(self, runs: int) -> float:
        self.process.stdin.write(f"{runs}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


def overhead(steps: int, threads: int, runs: int, rounds: int) -> dict[str, float]:
    """Server (concurrency 1, no batching) vs direct seconds per image, measured in alternating rounds."""
    direct = DirectRunner(steps, threads)
    with tempfile.TemporaryDirectory() as folder:
        process, url = start_server(Path(folder) / "data", 1, threads)
        try:
            asyncio.run(load(url, 4, 1, steps))
            served, direct_times = [], []
            before = _sums(url)
            for _ in range(rounds):
                served.append(asyncio.run(load(url, runs, 1, steps))["s_per_image"])
                direct_times.append(direct.seconds_per_image(runs))
            after = _sums(url)
        finally:
            process.terminate()
            process.wait(30)
            direct.close()
    ratios = sorted(s / d for s, d in zip(served, direct_times, strict=True))
    http, generate = (after[k] - before[k] for k in ("http", "generate"))
    return {"server_s_per_image": statistics.median(served), "direct_s_per_image": statistics.median(direct_times),
            "overhead": ratios[len(ratios) // 2] - 1, "overhead_in_server": http / generate - 1}


def _sums(url: str) -> dict[str, float]:
    """Seconds spent answering OpenAI requests, and generating inside them, from the server's own metrics."""
    text = httpx.get(f"{url}/metrics").text
    sums = {"http": 0.0, "generate": 0.0}
    for line in text.splitlines():
        if line.startswith('kolors_http_request_seconds_sum{api="openai",status="200"}'):
            sums["http"] = float(line.split()[-1])
        elif line.startswith("kolors_batch_seconds_sum"):
            sums["generate"] = float(line.split()[-1])
    return sums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--skip-load", action="store_true", help="only the overhead measurement")
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    results: dict[str, dict] = {}
    for batching, batch_images in () if args.skip_load else (("off", 1), ("on", 8)):
        with tempfile.TemporaryDirectory() as folder:
            process, url = start_server(Path(folder) / "data", batch_images, args.threads)
            try:
                asyncio.run(load(url, 4, 1, args.steps))  # warm-up
                for c in levels:
                    results[f"{batching}/{c}"] = asyncio.run(load(url, args.requests, c, args.steps))
                    print(f"batching {batching}, concurrency {c}: {results[f'{batching}/{c}']}", flush=True)
            finally:
                process.terminate()
                process.wait(30)
    cost = overhead(args.steps, args.threads, args.requests // 4, rounds=5)
    print(f"\ndirect Pipeline.generate: {cost['direct_s_per_image']:.3f} s/image; server (concurrency 1, no "
          f"batching): {cost['server_s_per_image']:.3f} s/image; overhead {100 * cost['overhead']:+.1f}% "
          "(median of 5 alternating rounds; target <= 5%); inside the server, answering took "
          f"{100 * cost['overhead_in_server']:+.1f}% more than its pipeline calls\n")
    print("| batching | concurrency | requests/min | images/s | p50 latency (s) | p95 latency (s) |")
    print("|---|---|---|---|---|---|")
    for key, r in results.items():
        batching, c = key.split("/")
        print(f"| {batching} | {c} | {r['requests_per_min']:.1f} | {r['images_per_s']:.2f} | {r['p50_s']:.2f} | "
              f"{r['p95_s']:.2f} |")
    if args.output:
        args.output.write_text(json.dumps({"results": results, **cost, "steps": args.steps}, indent=2))


if __name__ == "__main__":
    main()
