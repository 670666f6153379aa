"""``kolors generate``, ``img2img``, ``inpaint`` and ``outpaint``: build one GenerationRequest, check it, load the
model, generate, save.

The options become a :class:`~kolors.request.GenerationRequest` (with ``--from-image``: the PNG's stored request,
the options given winning). Every check that needs no model runs before torch is imported (the request's
``validate``, the output folder, ControlNet folders); the request each image was made with is stored in its PNG.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
from pathlib import Path
from typing import Any

from ..arguments import Parser, number, positive_int
from ..defaults import MICRO_CONDITIONING
from ..errors import KolorsError
from .common import note, path_and_number, seed
from .output import DEFAULT_OUTPUT_DIR, OutputPlan

BUILTIN_NOTICE = (
    "note: using the small built-in model (coloured shapes, {size}). For real Kolors weights pass "
    "--model DIR (a Kwai-Kolors/Kolors-diffusers or Kwai-Kolors/Kolors folder) or set KOLORS_MODEL."
)
TASKS = {"generate": "text-to-image", "img2img": "image-to-image", "inpaint": "inpaint", "outpaint": "outpaint"}
# Request fields set from options of the same name (the rest are built below).
SAMPLING = ("negative_prompt", "width", "height", "steps", "guidance", "guidance_stop", "scheduler", "seed",
            "num_images",
            "batch_size", "strength", "feather", "resize_mask", "extend", "pag_scale", "pag_layers", "mode")
# What a stored request keeps only for the task that made it.
TASK_FIELDS = {"init_image": ("image-to-image", "inpaint", "outpaint"), "strength": ("image-to-image", "inpaint",
               "outpaint"), "mask": ("inpaint",), "resize_mask": ("inpaint",), "feather": ("inpaint", "outpaint"),
               "extend": ("outpaint",)}

log = logging.getLogger("kolors")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``generate``, ``img2img``, ``inpaint`` and ``outpaint`` to the ``kolors`` subcommands."""
    from ..defaults import CONTROL_IMG2IMG_STRENGTH, IMG2IMG_STRENGTH
    from . import controls, inpaint

    options = generation_options(common)
    gen = sub.add_parser("generate", parents=[options], help="text to image",
                         description="Generate images from a text prompt (Chinese or English).")
    gen.add_argument("prompt", nargs="?", help="the prompt (optional with --from-image)")
    i2i = sub.add_parser("img2img", parents=[options], help="redraw an image following a prompt",
                         description="Redraw an input image following a prompt.")
    i2i.add_argument("prompt", nargs="?", help="the prompt (optional with --from-image)")
    i2i.add_argument("--image", type=Path, metavar="FILE", help="input image")
    i2i.add_argument("--strength", type=number, metavar="F",
                     help=f"0 keeps the input, 1 ignores it (default: the model's, {IMG2IMG_STRENGTH} for Kolors; "
                          f"{CONTROL_IMG2IMG_STRENGTH} with --control)")
    for command in (gen, i2i):
        controls.add_arguments(command)
    inpaint.add_commands(sub, options)


def generation_options(common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The model, sampling, image-prompt and output options of the image-making commands (a parent parser)."""
    from ..defaults import MODES, TEXT_ENCODER_QUANTS
    from ..devices import DEVICES, DTYPES
    from ..schedulers import SCHEDULER_NAMES
    from .image_prompt_options import add_arguments as add_image_prompt_arguments

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
    s.add_argument("--guidance-stop", type=number, metavar="F",
                   help="guide only the first F of the steps, 0-1; the rest follow the prompt unguided (default: "
                        "the model's, 1 for Kolors)")
    s.add_argument("--width", type=positive_int, metavar="W",
                   help="image width, a multiple of 8 (default: the model's)")
    s.add_argument("--height", type=positive_int, metavar="H",
                   help="image height, a multiple of 8 (default: the model's)")
    s.add_argument("--seed", type=seed, metavar="N",
                   help="seed of the first image; image i uses N+i (default or -1: random, printed and stored)")
    s.add_argument("--num-images", "-n", type=positive_int, metavar="K", help="images to make (default 1)")
    s.add_argument("--batch-size", type=positive_int, metavar="B", help="images denoised together; each batch is saved when it is done (default: all)")
    s.add_argument("--scheduler", choices=SCHEDULER_NAMES, help="sampler (default: the checkpoint's own)")
    s.add_argument("--pag-scale", type=number, metavar="F",
                   help="perturbed-attention guidance scale, e.g. 3.0 (default 0: off)")
    s.add_argument("--pag-layers", metavar="LAYERS",
                   help="comma-separated UNet layers PAG perturbs (default: mid, as diffusers' Kolors PAG)")
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
    """Run an image-making command: request, checks, model, images."""
    from ..metadata import read_parameters
    from ..signals import import_whole

    stored = read_parameters(args.from_image) if args.from_image else {}
    request = build_request(args, stored)
    request.validate()
    output = OutputPlan(args.output, request.num_images)
    import_whole("torch")  # the cheap checks are done; a Ctrl-C in a library's import is held until it is complete
    load = model_options(args, stored)
    _check_controlnets(request, load["model"])
    _note_unknown_words(request.prompt, load["model"])

    import_whole("kolors.pipelines.pipeline")  # diffusers, transformers
    from ..pipelines.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(**load)
    if pipe.is_builtin:
        note(args, BUILTIN_NOTICE.format(size=f"{pipe.defaults.width}x{pipe.defaults.height}"))
    drawn = request.seed is None
    if drawn:  # drawn here, so that every batch continues the same seeds
        request = request.replace(seed=random.randrange(2**32))
    for i, part in enumerate(_batches(request)):  # each batch's images are saved before the next is denoised
        result = pipe.generate(part, progress=False if args.quiet else None)
        if drawn and i == 0:
            first, n = request.seed, request.num_images
            note(args, f"seed {first}" + (f" (images use seeds {first}…{first + n - 1})" if n > 1 else ""))
        for image, params in zip(result.images, result.parameters, strict=True):
            print(output.save(image, params, params["seed"]), flush=True)
    return 0


def _batches(request: Any) -> list[Any]:
    """``request`` as one request per ``--batch-size`` images (seeds continuing), so that an interrupted run keeps
    the batches it finished."""
    size = request.batch_size or request.num_images
    return [request.replace(seed=request.seed + first, num_images=min(size, request.num_images - first),
                            batch_size=None) for first in range(0, request.num_images, size)]


# --- the request ---------------------------------------------------------------------------------------------------
def build_request(args: argparse.Namespace, stored: dict[str, Any]):
    """The request of the command in ``args``: the stored one (``--from-image``) with the options given winning."""
    from ..request import GenerationRequest
    from . import controls, image_prompt_options

    task = TASKS[args.command]
    data = _replayable(args, stored, task)
    options = {key: getattr(args, key, None) for key in SAMPLING}
    options["init_image"] = getattr(args, "image", None)
    options["mask"] = getattr(args, "mask", None)
    data.update({key: str(value) if isinstance(value, Path) else value
                 for key, value in options.items() if value is not None})
    if args.prompt is not None:
        data["prompt"] = args.prompt
    if data.get("seed") == -1:  # a new random seed, also with --from-image
        del data["seed"]
    if args.width is not None or args.height is not None:  # a new size: condition on it, as a new run would
        for key in ("original_size", "target_size"):  # (crop_coords stays: it does not depend on the size)
            data.pop(key, None)
    if "prompt" not in data:
        raise KolorsError(f'no prompt given: kolors {args.command} "a red circle" (or --from-image PNG)')
    request = GenerationRequest.from_dict({**data, "task": task}, strict=False)
    request.loras = lora_entries(args, stored) if args.lora or stored.get("loras") else []
    request.controls = controls.controls_from(args, stored) if hasattr(args, "control") else []
    request.ip_adapter, request.face_id = image_prompt_options.image_prompts_from(args, stored)
    return request


def _replayable(args: argparse.Namespace, stored: dict[str, Any], task: str) -> dict[str, Any]:
    """The fields of a stored request that this command replays (a stored img2img input is not a text-to-image's)."""
    from ..request import GenerationRequest

    names = {f for f in GenerationRequest.__dataclass_fields__} - {"loras", "controls", "ip_adapter", "face_id",
                                                                   "task", "num_images", "batch_size"}
    data = {k: v for k, v in stored.items() if k in names and v is not None}
    stored_task = stored.get("task") or ("outpaint" if stored.get("extend") else "inpaint" if stored.get("mask")
                                         else "image-to-image" if stored.get("init_image") else "text-to-image")
    for key, tasks in TASK_FIELDS.items():
        if key in data and task not in tasks:
            del data[key]
    if stored_task != task and stored.get("init_image") and task == "text-to-image":
        log.warning("%s was made by %s from %s: use `kolors %s --from-image` to redraw it the same way",
                    args.from_image, stored_task, stored["init_image"],
                    {v: k for k, v in TASKS.items()}[stored_task])
    for key in ("init_image", "mask"):
        if key in data and not getattr(args, "image" if key == "init_image" else key, None) \
                and not Path(str(data[key])).expanduser().exists():
            log.warning("the %s of %s (%s) is not found here: give --%s FILE", key.replace("init_", ""),
                        args.from_image, data[key], "image" if key == "init_image" else key)
            del data[key]
    if task in ("inpaint", "outpaint"):
        for key in MICRO_CONDITIONING:
            data.pop(key, None)
    return data


def lora_entries(args: argparse.Namespace, stored: dict[str, Any]) -> list:
    """``--lora FILE[:WEIGHT]`` options, else the stored LoRAs whose files are here (a warning for the others)."""
    from ..adapters.lora_files import lora_files
    from ..request import Lora

    if args.lora:
        entries = []
        for spec in args.lora:
            path, weight = path_and_number(spec, "--lora", "weight")
            lora_files(Path(path).expanduser())  # a missing or unusable file is refused before the model loads
            entries.append(Lora(path, 1.0 if weight is None else weight))
        return entries
    entries = []
    for lora in stored.get("loras") or []:
        if not isinstance(lora, dict):
            continue
        path = Path(str(lora.get("path") or lora.get("file") or "")).expanduser()
        if (lora.get("path") or lora.get("file")) and path.exists():
            entries.append(Lora(str(path), float(lora.get("weight", 1.0))))
        else:
            log.warning("%s was made with the LoRA %s (%s) which is not found here: generating without it "
                        "(pass --lora FILE:WEIGHT)", args.from_image, lora.get("name"), lora.get("file"))
    return entries


# --- the model ---------------------------------------------------------------------------------------------------
def model_options(args: argparse.Namespace, stored: dict[str, Any]) -> dict[str, Any]:
    """``Pipeline.from_pretrained`` arguments: the options, else what the stored image was made with (when this
    machine has it), else the defaults. Bad device/dtype names and missing weight files fail here."""
    from ..devices import resolve_device, resolve_dtype

    model = args.model
    if model is None and stored.get("model") not in (None, "built-in"):
        if _model_exists(stored["model"]):
            model = stored["model"]
        else:
            instead = os.environ.get("KOLORS_MODEL") or "the built-in model"
            log.warning("the model %s was made with (%s) is not available here: using %s (choose one with --model)",
                        args.from_image, stored["model"], instead)
    if model is not None and Path(model).expanduser().exists():  # an absolute path: --from-image works anywhere
        model = str(Path(model).expanduser().absolute())
    device, dtype = args.device, args.dtype
    if device is None and stored.get("device") is not None:
        if _device_available(stored["device"]):
            device, dtype = stored["device"], dtype or stored.get("dtype")
        else:
            log.warning("%s was made on %s, which this machine lacks: using --device auto (pixels may differ)",
                        args.from_image, stored["device"])
    resolve_dtype(dtype or "auto", resolve_device(device or "auto"))
    for option, path in (("--unet", args.unet), ("--text-encoder", args.text_encoder)):
        if path is not None and not Path(path).expanduser().is_file():
            raise KolorsError(f"{option} file not found: {path}")
    annotators = getattr(args, "annotators", None)
    return dict(model=model, device=device or "auto", dtype=dtype or "auto", unet_file=args.unet,
                text_encoder_file=args.text_encoder, offload=args.offload,
                mode=args.mode or stored.get("mode") or "exact",
                text_encoder_quant=args.text_encoder_quant or stored.get("text_encoder_quant"), compile=args.compile,
                annotator_dir=annotators.expanduser() if annotators is not None else None)


def _check_controlnets(request: Any, model: str | None) -> None:
    """Each control has a ControlNet folder before the model loads: the one it names, else the conventional one."""
    from ..loading.locate import conventional_controlnet_folder, locate_model

    for control in request.controls:
        if control.controlnet is not None:
            continue
        found = conventional_controlnet_folder(control.type, locate_model(model))
        if found is None:
            raise KolorsError(f"no ControlNet folder for '{control.type}' controls: pass --controlnet "
                              f"{control.type}=DIR (a Kwai-Kolors/Kolors-ControlNet-{control.type.title()} folder)")
        control.controlnet = str(found)


def _note_unknown_words(prompt: str, model: str | None) -> None:
    """One warning line when the prompt uses words the model never saw in training (models trained by kolors'
    recipe, such as the built-in one, record their captions' vocabulary), instead of silently ignoring them."""
    from ..loading.locate import locate_model
    from ..recipe.vocabulary import unknown_words

    words = unknown_words(prompt, locate_model(model))
    if words:
        log.warning("this model never saw %s in training: %s will not steer the image", ", ".join(words),
                    "it" if len(words) == 1 else "they")


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
