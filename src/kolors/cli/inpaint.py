"""The ``kolors inpaint`` and ``kolors outpaint`` commands' own options (the request's ``init_image``, ``mask``,
``resize_mask``, ``feather``, ``extend``); the shared model/sampling/output options come from the parent parser,
and both take the ControlNet options of :mod:`kolors.cli.controls` (``--control TYPE=IMAGE[:SCALE]``, …)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..arguments import number


def _pixels(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more pixels, got {text}")
    return value


def _extend(text: str) -> list[int]:
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"expected LEFT,TOP,RIGHT,BOTTOM pixels (e.g. 128,0,128,0), got '{text}'")
    return [_pixels(p.strip()) for p in parts]


def _expand(text: str) -> list[int]:
    return [_pixels(text)] * 4


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``inpaint`` and ``outpaint`` sub-commands to ``sub`` (an argparse subparsers object)."""
    from ..defaults import INPAINT_STRENGTH as DEFAULT_STRENGTH

    inpaint = sub.add_parser(
        "inpaint", parents=[common], help="redraw the masked part of an image",
        description="Redraw the white part of --mask in --image following a prompt; the rest is kept pixel for "
                    "pixel. Works with a Kolors-Inpainting folder (official defaults: 25 steps, guidance 6.0) "
                    "or an ordinary Kolors model (latent blending).")
    outpaint = sub.add_parser(
        "outpaint", parents=[common], help="extend an image beyond its borders",
        description="Grow the canvas of --image by --extend / --expand pixels and fill the new area following a "
                    "prompt; the original pixels are kept.")
    for parser in (inpaint, outpaint):
        parser.add_argument("prompt", nargs="?", help="the prompt (optional with --from-image)")
        parser.add_argument("--image", type=Path, metavar="FILE", help="input image")
        parser.add_argument("--strength", type=number, metavar="F",
                            help=f"how far the new part is noised, 0 keeps the image (default {DEFAULT_STRENGTH})")
        parser.add_argument("--feather", type=_pixels, metavar="PX",
                            help="blend the generated pixels into the kept ones over PX pixels (default 0)")
    inpaint.add_argument("--mask", type=Path, metavar="FILE",
                         help="mask image, same size as --image: white = redraw, black = keep")
    inpaint.add_argument("--resize-mask", action="store_true", default=None,
                         help="stretch a mask of another size to the image's size")
    from . import controls

    controls.add_arguments(inpaint)
    controls.add_arguments(outpaint)
    sides = outpaint.add_mutually_exclusive_group()
    sides.add_argument("--extend", type=_extend, metavar="L,T,R,B",
                       help="pixels to add on the left, top, right and bottom (grown to multiples of 8)")
    sides.add_argument("--expand", type=_expand, dest="extend", metavar="PX", help="pixels to add on every side")
