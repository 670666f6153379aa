"""Peak GPU memory and step time of `kolors train` on full-size Kolors (issue 3's memory targets).

Usage (GPU machine, repo root; diffusers wheel installed, bitsandbytes optional):
    PYTHONPATH=src python benchmarks/bench_training.py lora  [--steps 6] [--size 1024] [--batch 4]
    PYTHONPATH=src python benchmarks/bench_training.py full  [--steps 4] [--size 1024] [--batch 2]
    python benchmarks/bench_training.py lora --model DIR --size 128 --batch 2 --steps 2   # smoke test anywhere

Without --model, full-size random-weight Kolors is written once in the diffusers layout (full_size.py).
benchmarks/gpu_all.py runs both as its part 5 (``--json FILE`` hands it the rows).
The data are rendered shapes scenes at --size with captions (`kolors data shapes`). Each run: cached text
embeddings and VAE latents (so ChatGLM and the VAE need not stay resident), gradient checkpointing, bf16 mixed
precision; full fine-tune also 8-bit AdamW when bitsandbytes is importable. Peak: torch.cuda.max_memory_reserved
up to the end of the first optimizer step (caching with ChatGLM and the VAE on the GPU included), then over the
steps after it alone (the training's own peak, optimizer state allocated); step time: median of the steps after
the first. Targets: LoRA at 1024², batch 4 <= 12 GiB; full UNet at 1024², batch >= 2 <= 40 GiB. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from full_size import write_full_size  # noqa: E402

from kolors.data.examples import write_imagefolder  # noqa: E402
from kolors.training.config import TrainConfig  # noqa: E402
from kolors.training.finetune import train  # noqa: E402

TARGET_GIB = {"lora": 12, "full": 40}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("lora", "full"))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/kolors-bench"))
    ap.add_argument("--json", type=Path, help="also write the rows to this file")
    args = ap.parse_args()
    batch = args.batch or {"lora": 4, "full": 2}[args.mode]
    folder = args.model or write_full_size(args.work)
    data = args.work / f"shapes-{args.size}"
    if not (data / "metadata.jsonl").is_file():
        write_imagefolder(data, max(8, 2 * batch), 0, split="train", size=args.size, lang="both")
    output = args.work / f"train-{args.mode}-{int(time.time())}"
    cuda = torch.cuda.is_available()
    cfg = TrainConfig(
        model=str(folder), data=str(data), output=str(output), mode=args.mode, steps=args.steps, batch_size=batch,
        resolution=args.size, buckets=False, cache_text=True, cache_latents=True, gradient_checkpointing=True,
        mixed_precision="bf16" if cuda else "no", use_8bit_adam=args.mode == "full", rank=4,
        checkpoint_every=10**9, tensorboard=False, progress=False, caption_dropout=0.0,
    )
    stamps: list[float] = []
    first_peak = float("nan")

    def after_step(*_):  # every optimizer step, GPU work included
        nonlocal first_peak
        if cuda:
            torch.cuda.synchronize()
            if not stamps:  # caching and the first step behind us: from here on, the training's own peak
                first_peak = torch.cuda.max_memory_reserved() / 2**30
                torch.cuda.reset_peak_memory_stats()
        stamps.append(time.perf_counter())

    from torch.optim.optimizer import register_optimizer_step_post_hook

    register_optimizer_step_post_hook(after_step)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    train(cfg)
    total = time.perf_counter() - t0
    peak = torch.cuda.max_memory_reserved() / 2**30 if cuda else float("nan")
    times = [b - a for a, b in zip(stamps, stamps[1:])]
    rows = [
        ("device", torch.cuda.get_device_name() if cuda else "cpu"),
        ("run", f"{args.mode}, {args.size}², batch {batch}, {args.steps} steps, mixed precision "
                f"{cfg.mixed_precision}, gradient checkpointing, "
                "cached text + latents" + (", 8-bit AdamW if available" if args.mode == "full" else ", rank 4")),
        ("peak GiB reserved, steps after the first", f"{peak:.2f} (target ≤ {TARGET_GIB[args.mode]})"),
        ("peak GiB reserved, caching + first step", f"{first_peak:.2f}"),
        ("s/step (median after the first)", f"{statistics.median(times):.3f}" if times else "n/a"),
        ("whole run incl. loading and caching (s)", f"{total:.0f}"),
    ]
    print("\n| what | value |\n| --- | --- |")
    for k, v in rows:
        print(f"| {k} | {v} |")
    if args.json:
        args.json.write_text(json.dumps(rows, ensure_ascii=False))


if __name__ == "__main__":
    main()
