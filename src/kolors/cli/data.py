"""``kolors data``: write training datasets (-> data/shapes.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import KolorsError
from .common import Parser, note, positive_int


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``kolors data shapes`` to the ``kolors`` subcommands."""
    data = sub.add_parser("data", help="write training datasets", description="Write training datasets.")
    data_sub = data.add_subparsers(dest="dataset", required=True, parser_class=Parser, metavar="DATASET")
    shapes = data_sub.add_parser(
        "shapes", parents=[common],
        help="synthetic bilingual coloured-shapes images with English and Chinese captions",
        description="Write a Hugging Face imagefolder (images/*.png + metadata.jsonl with file_name/text, plus "
                    "text_en/text_zh and the scene) of synthetic shapes scenes, captioned in both languages.")
    shapes.add_argument("output", type=Path, metavar="DIR", help="new or empty folder")
    shapes.add_argument("--num", "-n", type=positive_int, default=1000, metavar="N", help="images (default 1000)")
    shapes.add_argument("--seed", type=int, default=0, metavar="S")
    shapes.add_argument("--size", type=positive_int, default=128, metavar="PX", help="image side (default 128)")
    shapes.add_argument("--split", choices=("train", "heldout"), default="train",
                        help="attribute combinations and wordings: training or held-out ones")
    shapes.add_argument("--lang", choices=("both", "en", "zh"), default="both",
                        help="language of the `text` column (both: random per image)")
    shapes.add_argument("--control", choices=("canny",),
                        help="also write each image's control map to conditioning/ and a conditioning_image column "
                             "(the layout of `kolors train --mode controlnet`); canny: the edges that "
                             "--control canny=IMAGE makes")


def run(args: argparse.Namespace) -> int:
    """Write the dataset named by ``args.dataset``."""
    from ..data.shapes import write_imagefolder

    out = args.output
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KolorsError(f"{out} exists and is not an empty folder: choose a new one")
    tmp = out.with_name(out.name + ".writing")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    write_imagefolder(tmp, args.num, args.seed, split=args.split, size=args.size, lang=args.lang,
                      control=args.control)
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    maps = f", their {args.control} maps" if args.control else ""
    note(args, f"wrote {args.num} images{maps} and metadata.jsonl to {out}")
    return 0
