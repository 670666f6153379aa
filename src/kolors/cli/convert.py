"""``kolors convert``: rewrite a model folder as fp16 safetensors (-> loading/conversion.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import note


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``kolors convert`` to the ``kolors`` subcommands."""
    conv = sub.add_parser("convert", parents=[common],
                          help="rewrite a model folder as fp16 safetensors (fast, safe loading)",
                          description="Rewrite a Kolors model folder (either published layout) as fp16 safetensors, "
                                      "shard for shard; the pickle .bin text encoder is read with weights_only.")
    conv.add_argument("source", metavar="SOURCE",
                      help="model folder, Hub id already in the local cache, or built-in (with its ControlNets)")
    conv.add_argument("destination", type=Path, metavar="DEST", help="new folder to write (not inside SOURCE)")
    conv.add_argument("--overwrite", action="store_true",
                      help="replace DEST if an earlier kolors convert wrote it (nothing else is ever replaced)")


def run(args: argparse.Namespace) -> int:
    """Convert ``args.source`` into ``args.destination``."""
    from ..signals import import_whole

    import_whole("kolors.loading.conversion")  # torch, safetensors: not cut in half by a Ctrl-C
    from ..loading import EMBEDDED_MODEL_DIR
    from ..loading.conversion import convert_model

    source = EMBEDDED_MODEL_DIR if args.source == "built-in" else args.source
    report = convert_model(source, args.destination, overwrite=args.overwrite,
                           on_file=lambda path: note(args, f"converting {path.parent.name}/{path.name}"))
    parts = ", ".join(f"{name} {c['tensors']} tensors in {c['shards']} file(s)" for name, c in report.components.items())
    note(args, f"wrote {report.folder} ({report.bytes / 2**30:.2f} GiB of fp16 weights: {parts})")
    return 0
