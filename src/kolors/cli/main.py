"""The ``kolors`` command line: generate, img2img, info."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ..errors import KolorsError

DEFAULT_OUTPUT_DIR = Path("outputs")
BUILTIN_NOTICE = (
    "kolors: using the small built-in model (coloured shapes, 128x128). For real Kolors weights pass "
    "--model DIR (a Kwai-Kolors/Kolors-diffusers or Kwai-Kolors/Kolors folder) or set KOLORS_MODEL."
)
# Parameters that --from-image carries over (explicit flags win).
REPLAYED = ("prompt", "negative_prompt", "width", "height", "steps", "guidance", "seed", "scheduler", "model",
            "device", "dtype", "strength", "init_image")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"kolors: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kolors`` command."""
    from ..devices import DEVICES, DTYPES
    from ..schedulers import SCHEDULER_NAMES

    parser = _Parser(prog="kolors", description="Kolors text-to-image: generate, redraw and inspect images.")
    parser.add_argument("--version", action="version", version=f"kolors {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    common = _Parser(add_help=False)
    g = common.add_argument_group("model")
    g.add_argument("--model", help="model folder or Hub id in the local cache (default: $KOLORS_MODEL, else built-in)")
    g.add_argument("--unet", type=Path, help="single-file UNet .safetensors replacing the model's")
    g.add_argument("--text-encoder", type=Path, help="single-file ChatGLM3 .safetensors replacing the model's")
    g.add_argument("--lora", action="append", default=[], metavar="FILE[:WEIGHT]",
                   help="LoRA .safetensors to apply (repeatable)")
    g.add_argument("--device", choices=DEVICES, help="auto (cuda > mps > cpu), cpu, cuda or mps")
    g.add_argument("--dtype", choices=("auto", *DTYPES), help="auto: float16 on GPUs, float32 on CPU")
    g.add_argument("--offload", action="store_true", help="keep weights in CPU memory; move each part to the GPU "
                                                            "only while it runs")
    s = common.add_argument_group("sampling")
    s.add_argument("--negative-prompt", help="what the image should not show")
    s.add_argument("--steps", type=_positive_int, help="denoising steps (default: the model's, 50 for Kolors)")
    s.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's, 5.0)")
    s.add_argument("--width", type=_positive_int, help="image width, a multiple of 8 (default: the model's)")
    s.add_argument("--height", type=_positive_int, help="image height, a multiple of 8 (default: the model's)")
    s.add_argument("--seed", type=int, help="seed of the first image (default: random, printed and stored)")
    s.add_argument("--num-images", type=_positive_int, default=1, help="images to make, seeds N, N+1, …")
    s.add_argument("--batch-size", type=_positive_int, help="images denoised together (default: all)")
    s.add_argument("--scheduler", choices=SCHEDULER_NAMES, help="sampler (default: the checkpoint's own)")
    o = common.add_argument_group("output")
    o.add_argument("--output", "-o", type=Path, help=f"PNG file or folder (default: {DEFAULT_OUTPUT_DIR}/)")
    o.add_argument("--from-image", type=Path, help="re-run with the parameters stored in this PNG")
    o.add_argument("--quiet", "-q", action="store_true", help="no progress bar or notices")
    o.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")

    gen = sub.add_parser("generate", parents=[common], help="text to image",
                         description="Generate images from a text prompt (Chinese or English).")
    gen.add_argument("prompt", nargs="?", help="the prompt (optional with --from-image)")
    i2i = sub.add_parser("img2img", parents=[common], help="redraw an image following a prompt",
                         description="Redraw an input image following a prompt.")
    i2i.add_argument("prompt", nargs="?", help="the prompt (optional with --from-image)")
    i2i.add_argument("--image", type=Path, help="input image")
    i2i.add_argument("--strength", type=float, help="0 keeps the input, 1 ignores it (default 0.3)")

    info = sub.add_parser("info", help="print the generation parameters stored in a PNG")
    info.add_argument("image", type=Path)
    info.add_argument("--json", action="store_true", help="print the JSON record instead of the A1111 text")
    info.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kolors`` command; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors (already printed on one line)
        return int(exc.code or 0)
    _configure_logging(args.debug, getattr(args, "quiet", False))
    try:
        if args.command == "info":
            return _info(args)
        return _generate(args)
    except KolorsError as exc:
        if args.debug:
            raise
        print(f"kolors: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kolors: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI never shows a raw traceback without --debug
        if args.debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"kolors: error: unexpected {type(exc).__name__}: {first} (run with --debug for details)",
              file=sys.stderr)
        return 1


def _info(args: argparse.Namespace) -> int:
    import json

    from ..metadata import format_parameters, read_parameters

    params = read_parameters(args.image)
    print(json.dumps(params, ensure_ascii=False, indent=2) if args.json else format_parameters(params))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from ..metadata import read_parameters

    params: dict[str, Any] = {}
    if args.from_image:
        stored = read_parameters(args.from_image)
        params = {k: stored[k] for k in REPLAYED if stored.get(k) is not None}
    for key in REPLAYED:
        value = getattr(args, "image" if key == "init_image" else key, None)
        if value is not None:
            params[key] = str(value) if isinstance(value, Path) else value
    if not params.get("prompt") and params.get("prompt") != "" and args.prompt is None:
        raise KolorsError("no prompt given: kolors generate \"a red circle\" (or --from-image PNG)")
    if args.command == "img2img" and not params.get("init_image"):
        raise KolorsError("img2img needs an input image: --image PNG")
    _check_early(params)
    outputs = _output_paths(args.output, params.get("seed"), args.num_images)

    pipe = _load(args, params)
    if pipe.is_builtin and not args.quiet:
        print(BUILTIN_NOTICE, file=sys.stderr)
    call = {k: params[k] for k in ("negative_prompt", "width", "height", "steps", "guidance", "seed", "scheduler")
            if k in params}
    progress = False if args.quiet else None
    if args.command == "img2img":
        result = pipe(params["prompt"], params["init_image"], strength=params.get("strength", 0.3), **call,
                      num_images=args.num_images, batch_size=args.batch_size, progress=progress)
    else:
        result = pipe(params["prompt"], **call, num_images=args.num_images, batch_size=args.batch_size,
                      progress=progress)
    if "seed" not in params and not args.quiet:
        print(f"kolors: seed {result.seeds[0]}", file=sys.stderr)

    from ..metadata import save_png

    for image, image_params, path in zip(result.images, result.parameters, outputs(result.seeds), strict=True):
        print(save_png(image, path, image_params))
    return 0


def _check_early(params: dict[str, Any]) -> None:
    """Reject bad sizes and step counts before spending time on loading the model."""
    from ..pipelines.text_to_image import _validate

    _validate(params.get("width", 8), params.get("height", 8), params.get("steps", 1), params.get("guidance", 1.0),
              1, params.get("scheduler", "default"), params.get("seed"))
    if "strength" in params and not 0.0 <= params["strength"] <= 1.0:
        raise KolorsError(f"strength must be between 0 and 1, got {params['strength']}")


def _load(args: argparse.Namespace, params: dict[str, Any]):
    from ..adapters.lora import load_lora, parse_lora_spec
    from ..pipelines.image_to_image import Image2ImagePipeline
    from ..pipelines.text_to_image import Text2ImagePipeline

    model = params.get("model")
    if model == "built-in" or (model is not None and args.model is None and args.from_image
                               and not _model_exists(model)):
        model = None
    cls = Image2ImagePipeline if args.command == "img2img" else Text2ImagePipeline
    pipe = cls.from_pretrained(model, device=params.get("device", "auto"), dtype=params.get("dtype", "auto"),
                               unet_file=args.unet, text_encoder_file=args.text_encoder, offload=args.offload)
    for spec in args.lora:
        path, weight = parse_lora_spec(spec)
        load_lora(pipe, path, weight)
    return pipe


def _model_exists(model: str) -> bool:
    from ..loading import locate_model

    try:
        locate_model(model)
    except KolorsError:
        return False
    return True


def _output_paths(output: Path | None, seed: int | None, count: int):
    """A function from the images' seeds to the paths they are written to; checks the target is writable now."""
    target = DEFAULT_OUTPUT_DIR if output is None else output
    is_file = target.suffix.lower() == ".png" and not target.is_dir()
    folder = target.parent if is_file else target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KolorsError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK):
        raise KolorsError(f"output folder {folder} is not writable: choose another --output")

    def paths(seeds: list[int]) -> list[Path]:
        if is_file:
            if count == 1:
                return [target]
            return [target.with_name(f"{target.stem}-{i}{target.suffix}") for i in range(count)]
        taken = [int(p.name[:5]) for p in folder.glob("[0-9][0-9][0-9][0-9][0-9]-*.png")]
        start = max(taken, default=-1) + 1
        return [folder / f"{start + i:05d}-{s}.png" for i, s in enumerate(seeds)]

    return paths


def _configure_logging(debug: bool, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LowercaseLevelFormatter("kolors: %(levelname)s: %(message)s"))
    log = logging.getLogger("kolors")
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.ERROR if quiet else logging.WARNING)
    log.propagate = False
    if not debug:
        import diffusers.utils.logging
        import transformers.utils.logging

        warnings.filterwarnings("ignore")
        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()


class _LowercaseLevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.levelname = record.levelname.lower()
        return super().format(record)


def _version() -> str:
    from .. import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
