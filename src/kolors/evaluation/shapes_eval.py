"""Colour/shape accuracy of a shapes model on the committed held-out prompts, per language.

    python -m kolors.evaluation.shapes_eval [--model DIR] [--pairs 252] [--seeds 2] [--steps N] [--guidance F]

Generates every held-out prompt (English and its Chinese translation) at seeds 0..S-1 with this project's
pipeline, scores each image with the automatic checker and prints a table: per language the fraction of images
with the asked colour and the asked shape, and how often a Chinese prompt and its English translation give the
same attributes. ``--json FILE`` also writes the report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from . import shapes_checker
from .heldout_prompts import load_heldout_prompts

__all__ = ["evaluate_pipeline", "format_report", "main"]


def evaluate_pipeline(
    pipe,
    *,
    pairs: int | None = None,
    seeds: int = 2,
    steps: int | None = None,
    guidance: float | None = None,
    languages: Sequence[str] = ("en", "zh"),
    progress: bool = False,
) -> dict:
    """The checker's report (see ``shapes_checker.evaluate_images``) on the first ``pairs`` held-out pairs."""
    rows = [r for r in load_heldout_prompts() if r["lang"] in languages and (pairs is None or r["pair_id"] < pairs)]
    records = []
    for row in tqdm(rows, desc="evaluating", unit="prompt", disable=not progress):
        result = pipe(row["prompt"], seed=0, num_images=seeds, steps=steps, guidance=guidance, progress=False)
        for seed, image in zip(result.seeds, result.images):
            records.append({"lang": row["lang"], "colour": row["colour"], "shape": row["shape"],
                            "pair_id": row["pair_id"], "seed": seed, "detection": shapes_checker.check_image(image)})
    report = shapes_checker.evaluate_images(records)
    report["settings"] = {"pairs": len({r["pair_id"] for r in rows}), "seeds": seeds,
                          "steps": steps or pipe.defaults.steps, "guidance": guidance or pipe.defaults.guidance}
    return report


def format_report(report: dict) -> str:
    """A Markdown table of a report."""
    s = report["settings"]
    lines = [
        f"{s['pairs']} held-out prompt pairs, {s['seeds']} seeds each, {s['steps']} steps, guidance {s['guidance']:g}",
        "",
        "| language | colour right | shape right | both | images |",
        "| --- | --- | --- | --- | --- |",
    ]
    for lang, v in report["languages"].items():
        lines.append(f"| {lang} | {v['colour']:.1%} | {v['shape']:.1%} | {v['both']:.1%} | {v['n']} |")
    a = report["agreement"]
    if a["pairs"]:
        lines += ["", f"zh/en agreement over {a['pairs']} image pairs: colour {a['colour']:.1%}, "
                      f"shape {a['shape']:.1%}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kolors.evaluation.shapes_eval", description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model folder (default: $KOLORS_MODEL, else the built-in model)")
    p.add_argument("--pairs", type=int, help="held-out prompt pairs to use (default: all)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)

    from ..errors import KolorsError
    from ..pipelines.legacy import Text2ImagePipeline

    try:
        pipe = Text2ImagePipeline.from_pretrained(args.model, device=args.device)
    except KolorsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    report = evaluate_pipeline(pipe, pairs=args.pairs, seeds=args.seeds, steps=args.steps, guidance=args.guidance,
                               progress=sys.stderr.isatty())
    report["seconds"] = time.monotonic() - t0
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
