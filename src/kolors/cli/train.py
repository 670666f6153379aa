"""The ``kolors train`` command's options (-> training/config.py, training/finetune.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..arguments import finite_number, positive_int
from .common import note

# command-line flag -> TrainConfig key (flags given win over --set, which wins over the config file)
FLAGS = {"model": "model", "data": "data", "output": "output", "mode": "mode", "steps": "steps",
         "batch_size": "batch_size", "lr": "lr", "rank": "rank", "resume": "resume",
         "mixed_precision": "mixed_precision", "seed": "seed"}


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``kolors train`` to the ``kolors`` subcommands."""
    from ..training.config import MIXED_PRECISION, MODES

    train = sub.add_parser(
        "train", parents=[common], help="fine-tune a Kolors model on captioned images (full, LoRA, DreamBooth, ControlNet)",
        description="Fine-tune a Kolors model on an image folder with captions (metadata.jsonl with file_name/text, "
                    "or a .txt beside each image), or train a ControlNet for it (metadata.jsonl with a "
                    "conditioning_image column too). Settings come from --config FILE (YAML or TOML), then --set "
                    "key=value, then the flags below. Multi-GPU / multi-node: `accelerate launch -m kolors train ...`. "
                    "See docs/training.md.")
    train.add_argument("--config", "-c", type=Path, metavar="FILE", help="YAML or TOML file of training settings")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                       help="override one config key (repeatable), e.g. --set caption_dropout=0.05")
    train.add_argument("--model", metavar="DIR_OR_HUB_ID", help="base model (default: $KOLORS_MODEL, else built-in)")
    train.add_argument("--data", metavar="DIR", help="training image folder")
    train.add_argument("--output", "-o", metavar="DIR", help="run folder: checkpoints, logs, samples, result")
    train.add_argument("--mode", choices=MODES,
                       help="full UNet, LoRA, DreamBooth (LoRA + instance/class prompts), or a ControlNet")
    train.add_argument("--steps", type=positive_int, metavar="N", help="optimizer steps")
    train.add_argument("--batch-size", type=positive_int, metavar="B", help="images per process per micro-step")
    train.add_argument("--lr", type=finite_number, metavar="F", help="learning rate")
    train.add_argument("--rank", type=positive_int, metavar="R", help="LoRA rank")
    train.add_argument("--mixed-precision", choices=MIXED_PRECISION,
                       help="autocast dtype (default auto: bf16 on GPUs, fp16 on GPUs without bf16, no on a CPU)")
    train.add_argument("--seed", type=int, metavar="N", help="seed of data order, noise and LoRA initialisation")
    train.add_argument("--resume", metavar="latest|DIR", help="continue from the newest checkpoint of --output, "
                                                             "or from a checkpoint folder")


def run(args: argparse.Namespace) -> int:
    """Run ``kolors train``; the result's location and losses are printed on stderr."""
    from ..signals import import_whole

    import_whole("kolors.training.finetune")  # torch, diffusers, accelerate: not cut in half by a Ctrl-C
    from ..training.config import load_config
    from ..training.finetune import train

    flags = {key: getattr(args, flag) for flag, key in FLAGS.items()}
    if args.quiet:
        flags["progress"] = False
    cfg = load_config(args.config, args.overrides, **flags)
    result = train(cfg)
    losses = ""
    if result.initial_loss is not None and result.final_loss is not None:
        losses = f"; evaluation loss {result.initial_loss:.4f} -> {result.final_loss:.4f}"
    note(args, f"trained {result.steps} steps: {result.weights}{losses}")
    return 0
