"""The ``kolors`` command line: generate, img2img, info.

Every user mistake (a ``KolorsError``, a usage error, an unwritable output, …) ends as one line
``kolors: error: …`` on stderr and exit status 2; Ctrl-C exits with 130; ``--debug`` shows tracebacks.
Cheap checks (sizes, steps, names, files, the output folder) run before the model is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from ..errors import KolorsError

DEFAULT_OUTPUT_DIR = Path("outputs")
EXIT_ERROR = 2
EXIT_UNEXPECTED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
BUILTIN_NOTICE = (
    "note: using the small built-in model (coloured shapes, {size}). For real Kolors weights pass "
    "--model DIR (a Kwai-Kolors/Kolors-diffusers or Kwai-Kolors/Kolors folder) or set KOLORS_MODEL."
)
# Parameters that --from-image carries over (explicit flags win).
REPLAYED = ("prompt", "negative_prompt", "width", "height", "steps", "guidance", "seed", "scheduler", "model",
            "device", "dtype", "strength", "init_image", "original_size", "crop_coords", "target_size",
            "pag_scale", "pag_layers", "mask", "resize_mask", "feather", "extend", "mode", "text_encoder_quant")
# SDXL micro-conditioning sizes, stored when they differ from the output size (img2img); the CLI has no flags.
MICRO = ("original_size", "crop_coords", "target_size")
# Output names kolors would write in a folder: <counter>-<seed>.png, A1111's convention.
_NUMBERED = re.compile(r"^(\d+)-")
_OTHER_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif")

log = logging.getLogger("kolors")
QUIET_LOGGERS = ("torchao", "torch.utils._pytree")


# --- arguments -------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"kolors: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < -1:  # -1: random, as in A1111
        raise argparse.ArgumentTypeError(f"must be a non-negative integer (or -1 for random), got {text}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kolors`` command."""
    from ..devices import DEVICES, DTYPES
    from ..performance.modes import MODES, TEXT_ENCODER_QUANTS
    from ..schedulers import SCHEDULER_NAMES

    parser = _Parser(prog="kolors", description="Kolors text-to-image: generate, redraw and inspect images.")
    parser.add_argument("--version", action="version", version=f"kolors {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    common = _Parser(add_help=False)
    g = common.add_argument_group("model")
    g.add_argument("--model", metavar="DIR_OR_HUB_ID",
                   help="model folder, or Hub id already in the local Hugging Face cache "
                        "(default: $KOLORS_MODEL, else the small built-in model)")
    g.add_argument("--unet", type=Path, metavar="FILE", help="single-file UNet .safetensors replacing the model's")
    g.add_argument("--text-encoder", type=Path, metavar="FILE",
                   help="single-file ChatGLM3 .safetensors replacing the model's")
    g.add_argument("--lora", action="append", default=[], metavar="FILE[:WEIGHT]",
                   help="LoRA .safetensors to apply (repeatable)")
    g.add_argument("--device", choices=DEVICES, help="auto (cuda > mps > cpu), cpu, cuda or mps")
    g.add_argument("--dtype", choices=("auto", *DTYPES), help="auto: float16 on GPUs, float32 on CPU")
    g.add_argument("--offload", action="store_true", help="keep weights in CPU memory; move each part to the GPU "
                                                            "only while it runs")
    g.add_argument("--mode", choices=MODES,
                   help="exact (default); fast: fewer steps with DPM++ 2M, fp8 and compile on recent GPUs; "
                        "low-memory: int8 text encoder, offload, tiled VAE (about 8 GiB); sequential: weights "
                        "streamed layer by layer (about 4 GiB). See docs/performance.md")
    g.add_argument("--text-encoder-quant", choices=TEXT_ENCODER_QUANTS,
                   help="weight-only quantisation of ChatGLM3 (needs torchao; default: the mode's)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="CUDA: fused QKV, channels-last and torch.compile of the UNet, cached across runs "
                        "(worth it for many images; default: on in fast mode)")
    s = common.add_argument_group("sampling")
    s.add_argument("--negative-prompt", metavar="TEXT", help="what the image should not show")
    s.add_argument("--steps", type=_positive_int, metavar="N",
                   help="denoising steps (default: the model's, 50 for Kolors)")
    s.add_argument("--guidance", type=_number, metavar="F",
                   help="classifier-free guidance scale (default: the model's, 5.0 for Kolors)")
    s.add_argument("--width", type=_positive_int, metavar="W",
                   help="image width, a multiple of 8 (default: the model's)")
    s.add_argument("--height", type=_positive_int, metavar="H",
                   help="image height, a multiple of 8 (default: the model's)")
    s.add_argument("--seed", type=_seed, metavar="N",
                   help="seed of the first image; image i uses N+i (default or -1: random, printed and stored)")
    s.add_argument("--num-images", type=_positive_int, default=1, metavar="K", help="images to make (default 1)")
    s.add_argument("--batch-size", type=_positive_int, metavar="B", help="images denoised together (default: all)")
    s.add_argument("--scheduler", choices=SCHEDULER_NAMES, help="sampler (default: the checkpoint's own)")
    s.add_argument("--pag-scale", type=_number, metavar="F",
                   help="perturbed-attention guidance scale, e.g. 3.0 (default 0: off)")
    s.add_argument("--pag-layers", metavar="LAYERS",
                   help="comma-separated UNet layers PAG perturbs (default: mid, as diffusers' Kolors PAG)")
    from .image_prompts import add_arguments as add_image_prompt_arguments

    add_image_prompt_arguments(common)
    o = common.add_argument_group("output")
    o.add_argument("--output", "-o", metavar="FILE_OR_DIR",
                   help=f"NAME.png (NAME-0.png, NAME-1.png, … for several images; replaced if present), or a "
                        f"folder that gets numbered files <NNNNN>-<seed>.png that never replace a file "
                        f"(default: {DEFAULT_OUTPUT_DIR}/)")
    o.add_argument("--from-image", type=Path, metavar="PNG",
                   help="re-run with the parameters stored in this PNG (options given here win)")
    o.add_argument("--quiet", "-q", action="store_true", help="no progress bar or notes (warnings still show)")
    o.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")

    gen = sub.add_parser("generate", parents=[common], help="text to image",
                         description="Generate images from a text prompt (Chinese or English).")
    gen.add_argument("prompt", nargs="?", help="the prompt (optional with --from-image)")
    i2i = sub.add_parser("img2img", parents=[common], help="redraw an image following a prompt",
                         description="Redraw an input image following a prompt.")
    i2i.add_argument("prompt", nargs="?", help="the prompt (optional with --from-image)")
    i2i.add_argument("--image", type=Path, metavar="FILE", help="input image")
    i2i.add_argument("--strength", type=_number, metavar="F",
                     help="0 keeps the input, 1 ignores it (default 0.3; 0.8 with --control)")
    from . import controls, inpainting

    for command in (gen, i2i):
        controls.add_arguments(command)
    inpainting.add_commands(sub, common, _number)

    info = sub.add_parser("info", help="print the generation parameters stored in a PNG",
                          description="Print the generation parameters stored in a PNG (A1111 text, or --json).")
    info.add_argument("image", type=Path, metavar="IMAGE.png")
    info.add_argument("--json", action="store_true", help="print the JSON record instead of the A1111 text")
    info.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    conv = sub.add_parser("convert", help="rewrite a model folder as fp16 safetensors (fast, safe loading)",
                          description="Rewrite a Kolors model folder (either published layout) as fp16 safetensors, "
                                      "shard for shard; the pickle .bin text encoder is read with weights_only.")
    conv.add_argument("source", metavar="SOURCE", help="model folder, or Hub id already in the local cache")
    conv.add_argument("destination", type=Path, metavar="DEST", help="new folder to write")
    conv.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    conv.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    conv.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")

    data = sub.add_parser("data", help="write training datasets", description="Write training datasets.")
    data_sub = data.add_subparsers(dest="dataset", required=True, parser_class=_Parser, metavar="DATASET")
    shapes = data_sub.add_parser(
        "shapes", help="synthetic bilingual coloured-shapes images with English and Chinese captions",
        description="Write a Hugging Face imagefolder (images/*.png + metadata.jsonl with file_name/text, plus "
                    "text_en/text_zh and the scene) of synthetic shapes scenes, captioned in both languages.")
    shapes.add_argument("output", type=Path, metavar="DIR", help="new or empty folder")
    shapes.add_argument("--num", "-n", type=_positive_int, default=1000, metavar="N", help="images (default 1000)")
    shapes.add_argument("--seed", type=int, default=0, metavar="S")
    shapes.add_argument("--size", type=_positive_int, default=128, metavar="PX", help="image side (default 128)")
    shapes.add_argument("--split", choices=("train", "heldout"), default="train",
                        help="attribute combinations and wordings: training or held-out ones")
    shapes.add_argument("--lang", choices=("both", "en", "zh"), default="both",
                        help="language of the `text` column (both: random per image)")
    shapes.add_argument("--control", choices=("canny",),
                        help="also write each image's control map to conditioning/ and a conditioning_image column "
                             "(the layout of `kolors train --mode controlnet`); canny: the edges that "
                             "--control canny=IMAGE makes")
    shapes.add_argument("--quiet", "-q", action="store_true", help="no summary line")
    shapes.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    from . import train as train_command

    train_command.add_command(sub, _positive_int, _number)
    return parser


# --- entry point -----------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kolors`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        if "--debug" not in argv:  # library warnings while importing torch/diffusers for the parser
            warnings.simplefilter("ignore")
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version and usage errors (already printed on one line)
            return exc.code if isinstance(exc.code, int) else EXIT_ERROR if exc.code else 0
        except KeyboardInterrupt:  # while torch is being imported
            _error("interrupted")
            return EXIT_INTERRUPTED
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run a parsed command, turning every failure into one line on stderr and an exit status."""
    with _cli_logging(args.debug, args.command != "info"):
        try:
            if args.command == "info":
                return _info(args)
            if args.command == "convert":
                return _convert(args)
            if args.command == "data":
                return _data(args)
            if args.command == "train":
                from . import train as train_command

                return train_command.run(args)
            return _generate(args)
        except KolorsError as exc:
            if args.debug:
                raise
            _error(str(exc))
            return EXIT_ERROR
        except KeyboardInterrupt:
            if args.debug:
                raise
            _error("interrupted")
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # `kolors info x.png | head -1`
            with contextlib.suppress(OSError):
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
            return EXIT_UNEXPECTED
        except Exception as exc:  # noqa: BLE001 - the CLI never shows a raw traceback without --debug
            if args.debug:
                raise
            if type(exc).__name__ == "OutOfMemoryError":  # torch's, raised outside the pipeline's own guard
                _error("out of GPU memory: try --offload, fewer --num-images or --batch-size 1, a smaller size, "
                       "or --device cpu")
                return EXIT_ERROR
            first = (str(exc).splitlines() or [""])[0]
            _error(f"unexpected {type(exc).__name__}: {first} (run with --debug for details)")
            return EXIT_UNEXPECTED


def _error(message: str) -> None:
    message = " ".join(message.split()) if "\n" in message else message
    print(f"kolors: error: {message}", file=sys.stderr, flush=True)


def _note(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(f"kolors: {message}", file=sys.stderr, flush=True)


# --- convert ---------------------------------------------------------------------------------------------------
def _convert(args: argparse.Namespace) -> int:
    from ..loading.convert import convert_model

    report = convert_model(args.source, args.destination, overwrite=args.overwrite,
                           on_file=lambda path: _note(args, f"converting {path.parent.name}/{path.name}"))
    parts = ", ".join(f"{name} {c['tensors']} tensors in {c['shards']} file(s)" for name, c in report.components.items())
    _note(args, f"wrote {report.folder} ({report.bytes / 2**30:.2f} GiB of fp16 weights: {parts})")
    return 0


# --- data ------------------------------------------------------------------------------------------------------
def _data(args: argparse.Namespace) -> int:
    from ..data.examples import write_imagefolder

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
    _note(args, f"wrote {args.num} images{maps} and metadata.jsonl to {out}")
    return 0


# --- info ------------------------------------------------------------------------------------------------------
def _info(args: argparse.Namespace) -> int:
    from ..metadata import PARAMETERS_CHUNK, format_parameters, read_parameters, read_png_text

    if args.json:
        print(json.dumps(read_parameters(args.image), ensure_ascii=False, indent=2))
        return 0
    text = read_png_text(args.image).get(PARAMETERS_CHUNK)
    print(text if text is not None else format_parameters(read_parameters(args.image)))
    return 0


# --- generate / img2img ----------------------------------------------------------------------------------------
def _generate(args: argparse.Namespace) -> int:
    from ..metadata import read_parameters

    params: dict[str, Any] = {}
    stored_loras: list[dict[str, Any]] = []
    stored: dict[str, Any] = {}
    if args.from_image:
        stored = read_parameters(args.from_image)
        params = {k: stored[k] for k in REPLAYED if stored.get(k) is not None}
        stored_loras = [x for x in stored.get("loras") or [] if isinstance(x, dict)]
        if args.width is not None or args.height is not None:  # a new size: condition on it, as a new run would
            for key in ("original_size", "target_size"):
                params.pop(key, None)
        _from_image_checks(args, params)
    for key in REPLAYED:
        value = getattr(args, "image" if key == "init_image" else key, None)
        if value is not None:
            params[key] = str(value) if isinstance(value, Path) else value
    if params.get("seed") == -1:  # a new random seed, also with --from-image
        del params["seed"]
    if "prompt" not in params:
        raise KolorsError('no prompt given: kolors generate "a red circle" (or --from-image PNG)')
    if args.command == "img2img" and not params.get("init_image"):
        raise KolorsError("img2img needs an input image: --image FILE")
    from . import controls, inpainting

    inpainting.check(args, params)
    if args.command == "generate" and params.get("init_image") and args.from_image:
        log.warning("%s was made by img2img from %s: use `kolors img2img --from-image` to redraw it the same way",
                    args.from_image, params["init_image"])

    loras = _lora_specs(args, stored_loras)
    from . import image_prompts

    image_prompt_specs = image_prompts.specs(args, stored)
    _check_early(args, params, loras)
    control_specs = controls.specs(args, stored, params.get("model")) if hasattr(args, "control") else []
    output = _OutputPlan(args.output, args.num_images)

    pipe = _load(args, params, controlnet=bool(control_specs))
    if control_specs and getattr(args, "annotators", None) is not None:
        pipe.annotator_dir = args.annotators.expanduser()
    if pipe.is_builtin:
        _note(args, BUILTIN_NOTICE.format(size=f"{pipe.defaults.width}x{pipe.defaults.height}"))
    if loras:
        from ..adapters.lora import load_lora

        for path, weight in loras:
            load_lora(pipe, path, weight)
    image_prompts.apply(pipe, image_prompt_specs)

    call = {k: params[k] for k in ("negative_prompt", "width", "height", "steps", "guidance", "seed", "scheduler",
                                   "pag_scale", "pag_layers")
            if k in params}
    call.update({k: tuple(params[k]) for k in MICRO if k in params})
    progress = False if args.quiet else None  # None: a bar only when stderr is a terminal
    if args.command in inpainting.COMMANDS:
        result = inpainting.run(pipe, args, params, call, control_specs, num_images=args.num_images,
                                batch_size=args.batch_size, progress=progress)
    elif control_specs:
        init = {k: params[k] for k in ("strength",) if k in params}
        if args.command == "img2img":
            init["image"] = params["init_image"]
        result = pipe(params["prompt"], controls=control_specs, **init, **call, num_images=args.num_images,
                      batch_size=args.batch_size, progress=progress)
    elif args.command == "img2img":
        result = pipe(params["prompt"], params["init_image"], strength=params.get("strength", 0.3), **call,
                      num_images=args.num_images, batch_size=args.batch_size, progress=progress)
    else:
        result = pipe(params["prompt"], **call, num_images=args.num_images, batch_size=args.batch_size,
                      progress=progress)
    if "seed" not in params:
        seeds = result.seeds
        _note(args, f"seed {seeds[0]}" + (f" (images use seeds {seeds[0]}…{seeds[-1]})" if len(seeds) > 1 else ""))

    extra = _lora_record(pipe)
    for image, image_params in zip(result.images, result.parameters, strict=True):
        path = output.save(image, {**image_params, **extra}, image_params["seed"])
        print(path, flush=True)
    return 0


def _from_image_checks(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Drop replayed settings that cannot work here (a model or device this machine lacks), with a warning."""
    model = params.get("model")
    if args.model is None and model is not None:
        if model == "built-in":
            params.pop("model")
        elif not _model_exists(model):
            params.pop("model")
            instead = os.environ.get("KOLORS_MODEL") or "the built-in model"
            log.warning("the model %s was made with (%s) is not available here: using %s (choose one with --model)",
                        args.from_image, model, instead)
    device = params.get("device")
    if args.device is None and device is not None and not _device_available(device):
        params.pop("device")
        if args.dtype is None:
            params.pop("dtype", None)
        log.warning("%s was made on %s, which this machine lacks: using --device auto (pixels may differ)",
                    args.from_image, device)


def _lora_specs(args: argparse.Namespace, stored: list[dict[str, Any]]) -> list[tuple[Path, float]]:
    """The LoRAs to load: --lora options, else those stored in --from-image's PNG (when their files are here)."""
    from ..adapters.lora import parse_lora_spec

    if args.lora:
        specs = [parse_lora_spec(spec) for spec in args.lora]
        return [(Path(path).expanduser().absolute(), weight) for path, weight in specs]
    specs = []
    for lora in stored:
        path = Path(str(lora.get("path") or lora.get("file") or "")).expanduser()
        if lora.get("file") and path.exists():
            specs.append((path, float(lora.get("weight", 1.0))))
        else:
            log.warning("%s was made with the LoRA %s (%s) which is not found here: generating without it "
                        "(pass --lora FILE:WEIGHT)", args.from_image, lora.get("name"), lora.get("file"))
    return specs


def _lora_record(pipe: Any) -> dict[str, Any]:
    """The LoRA entries of the stored parameters (nothing without LoRAs)."""
    from ..adapters.lora import a1111_lora_hashes, loaded_loras, lora_parameters

    active = {lora.name: lora for lora in loaded_loras(pipe)}
    records = [{**p, "path": str(active[p["name"]].path)} for p in lora_parameters(pipe)]
    return {"loras": records, "lora_hashes": a1111_lora_hashes(pipe)} if records else {}


def _check_early(args: argparse.Namespace, params: dict[str, Any], loras: list[tuple[Path, float]]) -> None:
    """Reject bad sizes, step counts and missing files before spending time on loading the model."""
    from ..devices import resolve_device, resolve_dtype
    from ..pipelines.text_to_image import _validate

    resolve_dtype(params.get("dtype", "auto"), resolve_device(params.get("device", "auto")))
    _validate(params.get("width", 8), params.get("height", 8), params.get("steps", 1), params.get("guidance", 1.0),
              args.num_images, params.get("scheduler", "default"), params.get("seed"))
    if "strength" in params and not 0.0 <= params["strength"] <= 1.0:
        raise KolorsError(f"strength must be between 0 and 1, got {params['strength']}")
    from ..pipelines.pag import pag_settings

    pag_settings(params.get("pag_scale"), params.get("pag_layers"))
    if args.pag_layers and not params.get("pag_scale"):
        raise KolorsError("--pag-layers goes with --pag-scale F (e.g. --pag-scale 3)")
    files = [("--unet file", args.unet), ("--text-encoder file", args.text_encoder),
             ("input image", params.get("init_image")), *(("LoRA file", path) for path, _ in loras)]
    for what, path in files:
        if path is not None and not Path(path).expanduser().exists():
            raise KolorsError(f"{what} not found: {path}")
    model = params.get("model")
    if model is not None:
        path = Path(model).expanduser()
        if path.exists():  # store an absolute path, so that --from-image works from any folder
            params["model"] = str(path.absolute())
    if params.get("init_image"):
        params["init_image"] = str(Path(params["init_image"]).expanduser().absolute())


def _load(args: argparse.Namespace, params: dict[str, Any], controlnet: bool = False):
    from ..pipelines.image_to_image import Image2ImagePipeline
    from ..pipelines.text_to_image import Text2ImagePipeline

    model = params.get("model")
    if model is None:
        env = os.environ.get("KOLORS_MODEL")
        if env and Path(env).expanduser().exists():
            model = str(Path(env).expanduser().absolute())
    cls = Image2ImagePipeline if args.command == "img2img" else Text2ImagePipeline
    if args.command in ("inpaint", "outpaint"):  # takes controls itself
        from ..pipelines.inpaint import InpaintPipeline as cls
    elif controlnet:
        from ..pipelines.controlnet import ControlNetPipeline as cls
    return cls.from_pretrained(model, device=params.get("device", "auto"), dtype=params.get("dtype", "auto"),
                               unet_file=args.unet, text_encoder_file=args.text_encoder, offload=args.offload,
                               mode=params.get("mode", "exact"), text_encoder_quant=params.get("text_encoder_quant"),
                               compile=args.compile)


def _model_exists(model: str) -> bool:
    from ..loading import locate_model

    try:
        locate_model(model)
    except KolorsError:
        return False
    return True


def _device_available(device: str) -> bool:
    from ..devices import resolve_device

    try:
        resolve_device(device)
    except KolorsError:
        return False
    return True


class _OutputPlan:
    """Where the images go: one named PNG (``NAME-<i>.png`` for several), or numbered files in a folder.

    The target is checked when the plan is made (before the model loads); folders are created only when the
    first image is written. Numbered names never replace an existing file, even with several kolors running.
    """

    def __init__(self, output: str | None, count: int) -> None:
        text = str(DEFAULT_OUTPUT_DIR) if output is None else output
        target = Path(text).expanduser()
        self.count = count
        self.index = 0
        if text.endswith(("/", os.sep)) or target.is_dir():
            self.file, self.folder = None, target
        elif target.suffix.lower() == ".png":
            self.file, self.folder = target, target.parent
        elif target.suffix.lower() in _OTHER_IMAGE_SUFFIXES:
            raise KolorsError(f"kolors writes PNG files (they carry the generation parameters): use "
                              f"--output {target.with_suffix('.png')} or a folder")
        else:
            self.file, self.folder = None, target
        self._check_writable()

    def _check_writable(self) -> None:
        existing = self.folder
        while not existing.exists():
            if existing.parent == existing:
                break
            existing = existing.parent
        if not existing.is_dir():
            raise KolorsError(f"cannot create output folder {self.folder}: {existing} is a file")
        # A real write, not os.access: that says yes to root on read-only mounts, /proc, /sys, …
        probe = existing / f".kolors-write-test-{os.getpid()}-{id(self):x}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
        except OSError as exc:
            what = "output folder" if existing == self.folder else "output folder's parent"
            raise KolorsError(f"{what} {existing} is not writable ({exc.strerror or exc}): "
                              "choose another --output") from None

    def save(self, image: Any, params: dict[str, Any], seed: int) -> Path:
        from ..metadata import save_png

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise KolorsError(f"cannot create output folder {self.folder}: {exc.strerror or exc}") from None
        i, self.index = self.index, self.index + 1
        if self.file is not None:  # the name the user gave: replaced if it exists, like any -o option
            path = self.file if self.count == 1 else self.file.with_name(f"{self.file.stem}-{i}{self.file.suffix}")
            return save_png(image, path, params)
        number = self._next_number()
        for _ in range(1000):
            try:
                return save_png(image, self.folder / f"{number:05d}-{seed}.png", params, overwrite=False)
            except FileExistsError:
                number += 1
        raise KolorsError(f"cannot find a free file name in {self.folder}")

    def _next_number(self) -> int:
        numbers = [int(m[1]) for p in self.folder.iterdir() if (m := _NUMBERED.match(p.name))]
        return max(numbers, default=-1) + 1


# --- logging ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _cli_logging(debug: bool, libraries: bool) -> Iterator[None]:
    """kolors' log records as ``kolors: warning: …`` lines on stderr; library chatter off unless ``debug``.

    Everything is put back afterwards, so ``main()`` can run inside another program (or a test session).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter("kolors: %(levelname)s: %(message)s"))
    saved = (log.handlers[:], log.level, log.propagate)
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.WARNING)
    log.propagate = False
    verbosity: list[tuple[Any, int]] = []
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.simplefilter("ignore")
                for name in QUIET_LOGGERS:  # notes printed while torch/torchao import (optional kernels)
                    logger = logging.getLogger(name)
                    verbosity.append((logger, logger.level))
                    logger.setLevel(logging.ERROR)
                if libraries:
                    import diffusers.utils.logging
                    import transformers.utils.logging

                    for lib in (diffusers.utils.logging, transformers.utils.logging):
                        verbosity.append((lib, lib.get_verbosity()))
                        lib.set_verbosity_error()
            yield
    finally:
        for lib, level in verbosity:
            if isinstance(lib, logging.Logger):
                lib.setLevel(level)
            else:
                lib.set_verbosity(level)
        log.handlers[:], level, log.propagate = saved
        log.setLevel(level)
        handler.flush()


class _OneLineFormatter(logging.Formatter):
    """Lower-case level names and no line breaks inside a message."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.levelname = record.levelname.lower()
        text = super().format(record)
        return " ".join(text.split("\n")) if "\n" in text and not record.exc_info else text


def _version() -> str:
    from .. import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
