"""``kolors generate`` and ``kolors img2img``, and the options they share with ``inpaint``/``outpaint``.

The shared model/sampling/output options are one parent parser (:func:`generation_options`); the cheap checks
(sizes, steps, names, files, the output folder) run before the model is loaded; the parameters are stored in every
PNG and replayed by ``--from-image``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path
from typing import Any

from ..errors import KolorsError
from .common import Parser, note, number, positive_int, seed

DEFAULT_OUTPUT_DIR = Path("outputs")
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


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``generate``, ``img2img``, ``inpaint`` and ``outpaint`` to the ``kolors`` subcommands."""
    options = generation_options(common)
    gen = sub.add_parser("generate", parents=[options], help="text to image",
                         description="Generate images from a text prompt (Chinese or English).")
    gen.add_argument("prompt", nargs="?", help="the prompt (optional with --from-image)")
    i2i = sub.add_parser("img2img", parents=[options], help="redraw an image following a prompt",
                         description="Redraw an input image following a prompt.")
    i2i.add_argument("prompt", nargs="?", help="the prompt (optional with --from-image)")
    i2i.add_argument("--image", type=Path, metavar="FILE", help="input image")
    i2i.add_argument("--strength", type=number, metavar="F",
                     help="0 keeps the input, 1 ignores it (default 0.3; 0.8 with --control)")
    from . import controls, inpainting

    for command in (gen, i2i):
        controls.add_arguments(command)
    inpainting.add_commands(sub, options)


def generation_options(common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The model, sampling, image-prompt and output options of the image-making commands (a parent parser)."""
    from ..devices import DEVICES, DTYPES
    from ..performance.modes import MODES, TEXT_ENCODER_QUANTS
    from ..schedulers import SCHEDULER_NAMES

    options = Parser(add_help=False, parents=[common])
    g = options.add_argument_group("model")
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
                        "low-memory: int8 text encoder and offload (about 8 GiB); sequential: weights streamed "
                        "layer by layer and a tiled VAE decode (about 4 GiB). See docs/performance.md")
    g.add_argument("--text-encoder-quant", choices=TEXT_ENCODER_QUANTS,
                   help="weight-only quantisation of ChatGLM3 (needs torchao; default: the mode's)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="CUDA: fused QKV, channels-last and torch.compile of the UNet, cached across runs "
                        "(worth it for many images; default: on in fast mode)")
    s = options.add_argument_group("sampling")
    s.add_argument("--negative-prompt", metavar="TEXT", help="what the image should not show")
    s.add_argument("--steps", type=positive_int, metavar="N",
                   help="denoising steps (default: the model's, 50 for Kolors)")
    s.add_argument("--guidance", type=number, metavar="F",
                   help="classifier-free guidance scale (default: the model's, 5.0 for Kolors)")
    s.add_argument("--width", type=positive_int, metavar="W",
                   help="image width, a multiple of 8 (default: the model's)")
    s.add_argument("--height", type=positive_int, metavar="H",
                   help="image height, a multiple of 8 (default: the model's)")
    s.add_argument("--seed", type=seed, metavar="N",
                   help="seed of the first image; image i uses N+i (default or -1: random, printed and stored)")
    s.add_argument("--num-images", type=positive_int, default=1, metavar="K", help="images to make (default 1)")
    s.add_argument("--batch-size", type=positive_int, metavar="B", help="images denoised together (default: all)")
    s.add_argument("--scheduler", choices=SCHEDULER_NAMES, help="sampler (default: the checkpoint's own)")
    s.add_argument("--pag-scale", type=number, metavar="F",
                   help="perturbed-attention guidance scale, e.g. 3.0 (default 0: off)")
    s.add_argument("--pag-layers", metavar="LAYERS",
                   help="comma-separated UNet layers PAG perturbs (default: mid, as diffusers' Kolors PAG)")
    from .image_prompts import add_arguments as add_image_prompt_arguments

    add_image_prompt_arguments(options)
    o = options.add_argument_group("output")
    o.add_argument("--output", "-o", metavar="FILE_OR_DIR",
                   help=f"NAME.png (NAME-0.png, NAME-1.png, … for several images; replaced if present), or a "
                        f"folder that gets numbered files <NNNNN>-<seed>.png that never replace a file "
                        f"(default: {DEFAULT_OUTPUT_DIR}/)")
    o.add_argument("--from-image", type=Path, metavar="PNG",
                   help="re-run with the parameters stored in this PNG (options given here win)")
    return options


def run(args: argparse.Namespace) -> int:
    """Run an image-making command."""
    return _generate(args)


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
        note(args, BUILTIN_NOTICE.format(size=f"{pipe.defaults.width}x{pipe.defaults.height}"))
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
        note(args, f"seed {seeds[0]}" + (f" (images use seeds {seeds[0]}…{seeds[-1]})" if len(seeds) > 1 else ""))

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
    if args.lora:
        from ..adapters.lora import parse_lora_spec

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
    """The LoRA entries of the stored parameters (nothing without LoRAs).

    Each LoRA's ``sha256`` is the whole file's (what ``sha256sum`` prints) and ``hash`` the short hash that the
    A1111 ``Lora hashes`` field shows for it (A1111's: of the tensor bytes after a safetensors header).
    """
    from ..adapters.lora import a1111_lora_hashes, loaded_loras, lora_parameters

    active = {lora.name: lora for lora in loaded_loras(pipe)}
    records = []
    for record in lora_parameters(pipe):
        lora = active[record["name"]]
        records.append({**record, "path": str(lora.path), "sha256": lora.sha256,
                        "hash": (lora.addnet_hash or lora.sha256)[:12]})
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

