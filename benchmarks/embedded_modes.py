"""Quality cost of each run mode, measured on the built-in model (where random full-size weights cannot show it).

Usage (repo root, installed venv):
    .venv/bin/python benchmarks/embedded_modes.py [--pairs 50] [--seeds 2] [--threads N] [--json FILE]

For exact mode, fast mode and each text-encoder quantisation: the first --pairs held-out prompt pairs (English
and Chinese) at seeds 0..S-1; colour/shape accuracy from the automatic checker (as kolors.evaluation.shapes_eval),
and PSNR/SSIM of every image against exact mode's image of the same prompt and seed. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kolors.evaluation import shapes_checker
from kolors.evaluation.heldout_prompts import load_heldout_prompts
from kolors.evaluation.image_metrics import psnr, ssim
from kolors.pipelines.legacy import Text2ImagePipeline

CONFIGS = {  # name -> from_pretrained keywords
    "exact": {},
    "fast": {"mode": "fast"},
    "int8": {"text_encoder_quant": "int8"},  # the low-memory mode's text encoder
    "int4": {"text_encoder_quant": "int4"},
}


def run(pipe: Text2ImagePipeline, rows: list[dict], seeds: int) -> tuple[list[dict], list[np.ndarray], float]:
    records, images, t0 = [], [], time.perf_counter()
    for row in rows:
        result = pipe(row["prompt"], seed=0, num_images=seeds, progress=False)
        for seed, image, pixels in zip(result.seeds, result.images, result.pixels):
            records.append({"lang": row["lang"], "colour": row["colour"], "shape": row["shape"],
                            "pair_id": row["pair_id"], "seed": seed, "detection": shapes_checker.check_image(image)})
            images.append(pixels)
    return records, images, (time.perf_counter() - t0) / len(images)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=50)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated (exact always runs first)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    chosen = ["exact", *(c for c in args.configs.split(",") if c in CONFIGS and c != "exact")]
    torch.set_num_threads(args.threads)
    rows = [r for r in load_heldout_prompts() if r["pair_id"] < args.pairs]

    out, reference = {}, None
    for name in chosen:
        kwargs = CONFIGS[name]
        pipe = Text2ImagePipeline.from_pretrained(None, device="cpu", **kwargs)
        records, images, seconds = run(pipe, rows, args.seeds)
        report = shapes_checker.evaluate_images(records)
        reference = images if reference is None else reference
        p_db = [psnr(a, b) for a, b in zip(images, reference)]
        s_sim = [ssim(a, b) for a, b in zip(images, reference)]
        finite = [x for x in p_db if np.isfinite(x)]
        out[name] = {
            "settings": f"{pipe.settings.default_steps(pipe.defaults.steps)} steps, "
                        f"{pipe.settings.scheduler or 'Euler'}",
            "s_per_image": seconds,
            "languages": report["languages"],
            "agreement": report["agreement"],
            "psnr_median": statistics.median(p_db),
            "psnr_mean_finite": statistics.mean(finite) if finite else float("inf"),
            "psnr_ge_25": sum(x >= 25 for x in p_db) / len(p_db),
            "ssim_mean": statistics.mean(s_sim),
            "ssim_median": statistics.median(s_sim),
        }
        print(name, json.dumps(out[name], default=str), flush=True)

    print(f"\n{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}; "
          f"{len(rows) // 2} held-out pairs x {args.seeds} seeds per language\n")
    print("| configuration | sampling | s/image | colour en / zh | shape en / zh | PSNR vs exact, median (≥ 25 dB) "
          "| SSIM vs exact, mean / median |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in out.items():
        lang = r["languages"]
        print(f"| {name} | {r['settings']} | {r['s_per_image']:.2f} | {lang['en']['colour']:.1%} / "
              f"{lang['zh']['colour']:.1%} | {lang['en']['shape']:.1%} / {lang['zh']['shape']:.1%} | "
              f"{r['psnr_median']:.1f} dB ({r['psnr_ge_25']:.0%}) | {r['ssim_mean']:.3f} / {r['ssim_median']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
