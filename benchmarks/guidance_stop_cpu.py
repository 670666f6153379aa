"""What stopping classifier-free guidance early saves: images per second at ``guidance_stop`` 1 vs 0.3.

Usage (repo root, installed venv):  .venv/bin/python benchmarks/guidance_stop_cpu.py [--model DIR] [--runs 3]

After the stop the loop runs only the conditional half of the batch, so a 25-step image at stop 0.3 runs the UNet
on 2 rows for 7 steps and 1 row for 18 (32 row-steps instead of 50). Same process, same prompt and seeds,
interleaved runs; prints the medians and their ratio (the model's own defaults otherwise).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model folder (default: the built-in model)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from kolors import load_pipeline

    pipe = load_pipeline(args.model, device="cpu")
    pipe("a red circle", seed=0, progress=False)  # warm-up
    times: dict[float, list[float]] = {1.0: [], 0.3: []}
    for _ in range(args.runs):
        for stop in times:
            start = time.perf_counter()
            pipe("a red circle", seed=0, num_images=args.images, guidance_stop=stop, progress=False)
            times[stop].append(time.perf_counter() - start)
    full, early = (statistics.median(times[s]) for s in (1.0, 0.3))
    print(f"{args.images} images, {pipe.defaults.steps} steps, guidance {pipe.defaults.guidance:g}, "
          f"{args.threads} thread(s), median of {args.runs}:")
    print(f"guidance_stop 1.0: {full:.2f} s   guidance_stop 0.3: {early:.2f} s   ratio {full / early:.2f}×")


if __name__ == "__main__":
    main()
