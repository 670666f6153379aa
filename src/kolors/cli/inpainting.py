"""The ``kolors inpaint`` and ``kolors outpaint`` commands' own options (twins of ``InpaintPipeline`` /
``InpaintPipeline.outpaint``); the shared model/sampling/output options come from the parent parser, and
both take the ControlNet options of :mod:`kolors.cli.controls` (``--control TYPE=IMAGE[:SCALE]``, …)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import KolorsError
from .common import number

COMMANDS = ("inpaint", "outpaint")
MICRO = ("original_size", "crop_coords", "target_size")


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


def check(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """One-line errors for what the command lacks; paths made absolute (stored, replayable from anywhere)."""
    if args.command not in COMMANDS:
        return
    if not params.get("init_image"):
        raise KolorsError(f"{args.command} needs an input image: --image FILE")
    if args.command == "inpaint":
        if not params.get("mask"):
            raise KolorsError("inpaint needs a mask: --mask FILE (white = redraw, black = keep)")
        mask = Path(params["mask"]).expanduser()
        if not mask.exists():
            raise KolorsError(f"mask not found: {mask}")
        params["mask"] = str(mask.absolute())
        if not params.get("resize_mask"):
            _check_sizes(Path(params["init_image"]).expanduser(), mask)
    else:
        if not params.get("extend"):
            raise KolorsError("outpaint needs --extend LEFT,TOP,RIGHT,BOTTOM or --expand PX")
        if args.width is not None or args.height is not None:
            raise KolorsError("outpaint takes its size from the image and --extend: drop --width/--height")
        params.pop("width", None)
        params.pop("height", None)


def _check_sizes(image: Path, mask: Path) -> None:
    """The mask-size error before the model loads (only the files' headers are read)."""
    from PIL import Image

    sizes = []
    for what, path in (("image", image), ("mask", mask)):
        try:
            with Image.open(path) as im:
                sizes.append(im.size)
        except FileNotFoundError:
            raise KolorsError(f"{what} not found: {path}") from None
        except (OSError, ValueError) as exc:
            raise KolorsError(f"cannot read {what} {path}: {exc}") from None
    if sizes[0] != sizes[1]:
        raise KolorsError(f"{mask.name} is {sizes[1][0]}×{sizes[1][1]} but the image is {sizes[0][0]}×{sizes[0][1]}: "
                          "resize the mask or pass --resize-mask")


def run(pipe: Any, args: argparse.Namespace, params: dict[str, Any], call: dict[str, Any],
        controls: list[dict[str, Any]], **kwargs: Any) -> Any:
    """Call the inpainting pipeline for the command in ``args`` (``controls``: the checked ``--control`` specs)."""
    from ..defaults import INPAINT_STRENGTH as DEFAULT_STRENGTH

    options = {"strength": params.get("strength", DEFAULT_STRENGTH), "feather": params.get("feather", 0)}
    call = {k: v for k, v in call.items() if k not in MICRO}  # inpainting conditions on the output size
    if args.command == "inpaint":
        return pipe(params["prompt"], params["init_image"], params["mask"], **options,
                    resize_mask=bool(params.get("resize_mask")), controls=controls, **call, **kwargs)
    return pipe.outpaint(params["prompt"], params["init_image"], list(params["extend"]), **options,
                         controls=controls, **call, **kwargs)
