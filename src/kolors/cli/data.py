"""``kolors data``: write training datasets (-> data/shapes.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..arguments import Parser, non_negative_int, positive_int
from ..errors import KolorsError
from .common import note

MIN_SIZE, MAX_SIZE = 8, 4096


def _side(text: str) -> int:
    value = positive_int(text)
    if not MIN_SIZE <= value <= MAX_SIZE:
        raise argparse.ArgumentTypeError(f"must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {text}")
    return value


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
    shapes.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="(default 0)")
    shapes.add_argument("--size", type=_side, default=128, metavar="PX",
                        help=f"image side, {MIN_SIZE}-{MAX_SIZE} (default 128)")
    shapes.add_argument("--split", choices=("train", "heldout"), default="train",
                        help="attribute combinations and wordings: training or held-out ones")
    shapes.add_argument("--lang", choices=("both", "en", "zh"), default="both",
                        help="language of the `text` column (both: random per image)")
    shapes.add_argument("--control", choices=("canny",),
                        help="also write each image's control map to conditioning/ and a conditioning_image column "
                             "(the layout of `kolors train --mode controlnet`); canny: the edges that "
                             "--control canny=IMAGE makes")


def run(args: argparse.Namespace) -> int:
    """Write the dataset named by ``args.dataset``: checked first, then built in a hidden folder that becomes
    ``DIR`` when complete (and is removed on an error, Ctrl-C or SIGTERM)."""
    from ..files import staging_folder

    out = args.output.expanduser()
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise KolorsError(f"{out} is a file: choose a new folder")
    if out.exists() and any(out.iterdir()):
        raise KolorsError(f"{out} exists and is not an empty folder: choose a new one")
    existing = next((p for p in out.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise KolorsError(f"cannot create {out}: {existing} is a file")
    from ..data.examples import write_imagefolder

    with staging_folder(out) as tmp:
        write_imagefolder(tmp, args.num, args.seed, split=args.split, size=args.size, lang=args.lang,
                          control=args.control)
    maps = f", their {args.control} maps" if args.control else ""
    note(args, f"wrote {args.num} images{maps} and metadata.jsonl to {out}")
    return 0
