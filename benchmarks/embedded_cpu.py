"""The built-in model on this CPU: loaded weights -> saved PNG inside a process, and the whole CLI call.

Usage (repo root, installed venv):  .venv/bin/python benchmarks/embedded_cpu.py [--runs 5] [--threads N]

In-process scope: prompt text -> PNG with its parameters on disk, after one warm-up, median of --runs runs, at
the model's defaults (its kolors_defaults.json). CLI scope: `kolors generate PROMPT --output FILE` as a fresh
process (interpreter start, imports, loading, generating, writing), median of --cli-runs runs. Also reported:
diffusers' KolorsPipeline on the same folder and settings, in the same process, as the baseline. Prints a
Markdown table last.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PROMPT = "一个红色的圆形，白色背景"


def _median_seconds(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--cli-runs", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from diffusers import KolorsPipeline

    from kolors import load_pipeline
    from kolors.loading import EMBEDDED_MODEL_DIR
    from kolors.metadata import save_png

    t0 = time.perf_counter()
    pipe = load_pipeline(device="cpu")
    load_s = time.perf_counter() - t0
    d = pipe.defaults
    tmp = Path(tempfile.mkdtemp())

    def ours() -> None:
        result = pipe(PROMPT, seed=0, progress=False)
        save_png(result.images[0], tmp / "ours.png", result.parameters[0], overwrite=True)

    reference = KolorsPipeline.from_pretrained(str(EMBEDDED_MODEL_DIR), variant="fp16", torch_dtype=torch.float32)
    reference.set_progress_bar_config(disable=True)

    def theirs() -> None:
        image = reference(PROMPT, num_inference_steps=d.steps, guidance_scale=d.guidance, width=d.width,
                          height=d.height, generator=torch.Generator().manual_seed(0)).images[0]
        image.save(tmp / "diffusers.png")

    ours_s = _median_seconds(ours, args.runs)
    theirs_s = _median_seconds(theirs, args.runs)

    exe = Path(sys.executable).with_name("kolors")
    cli = [str(exe), "generate", PROMPT, "--seed", "0", "--quiet", "--output", str(tmp / "cli.png")]
    cli_times = []
    for _ in range(args.cli_runs):
        (tmp / "cli.png").unlink(missing_ok=True)
        t0 = time.perf_counter()
        subprocess.run(cli, check=True, env={k: v for k, v in os.environ.items() if k != "KOLORS_MODEL"},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cli_times.append(time.perf_counter() - t0)

    cpu = platform.processor() or platform.machine()
    print(f"\nbuilt-in model, {d.width}x{d.height}, {d.steps} steps, guidance {d.guidance:g}; {os.cpu_count()} cores "
          f"({cpu}), torch {torch.__version__}, {torch.get_num_threads()} threads; load {load_s:.2f}s\n")
    print("| scope | kolors s | diffusers s | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| loaded weights -> saved PNG (median of {args.runs}) | {ours_s:.3f} | {theirs_s:.3f} | "
          f"{theirs_s / ours_s:.2f}x |")
    print(f"| whole CLI call `kolors generate` (median of {args.cli_runs}) | {statistics.median(cli_times):.2f} | - | - |")


if __name__ == "__main__":
    main()
