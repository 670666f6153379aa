"""``kolors info``: print the generation parameters stored in a PNG (-> metadata.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``kolors info`` to the ``kolors`` subcommands."""
    info = sub.add_parser("info", parents=[common], help="print the generation parameters stored in a PNG",
                          description="Print the generation parameters stored in a PNG (A1111 text, or --json).")
    info.add_argument("image", type=Path, metavar="IMAGE.png")
    info.add_argument("--json", action="store_true", help="print the JSON record instead of the A1111 text")


def run(args: argparse.Namespace) -> int:
    """Print the parameters of ``args.image``."""
    from ..metadata import PARAMETERS_CHUNK, format_parameters, read_parameters, read_png_text

    if args.json:
        print(json.dumps(read_parameters(args.image), ensure_ascii=False, indent=2))
        return 0
    text = read_png_text(args.image).get(PARAMETERS_CHUNK)
    print(text if text is not None else format_parameters(read_parameters(args.image)))
    return 0
