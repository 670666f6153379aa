"""What one generation needs, as one object: :class:`GenerationRequest`.

The CLI, the Python API, the PNG metadata (``--from-image``), the HTTP server and the ComfyUI nodes all build and
read this one object; its JSON form (:meth:`GenerationRequest.to_dict`) is what a PNG stores and what the server
accepts. It is importable without torch or diffusers, and :meth:`GenerationRequest.validate` checks everything
that needs no model weights (sizes, numbers, names, files readable as images of a sane size) with one-line
errors, so a mistake is reported before a model is loaded.

```python
from kolors import GenerationRequest, load_pipeline

request = GenerationRequest("一只红色的圆", seed=42, num_images=2)
request = GenerationRequest("a cat", task="inpaint", init_image="room.png", mask="mask.png",
                            controls=[Control("canny", "outline.png")], loras=[Lora("style.safetensors", 0.8)])
result = load_pipeline().generate(request)
```

Fields left as ``None`` are filled by the pipeline from the model (its size, steps and guidance, the task's
strength); :meth:`Pipeline.resolve <kolors.pipelines.pipeline.Pipeline.resolve>` returns the request with every
value it will use, which is what the images record.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .defaults import (
    CANNY_THRESHOLDS,
    CONTROL_END,
    CONTROL_SCALE,
    CONTROL_START,
    FACE_ID_SCALE,
    IP_ADAPTER_SCALE,
    MODES,
)
from .errors import InvalidParameterError
from .images import check_image_input, open_mask

TEXT_TO_IMAGE = "text-to-image"
IMAGE_TO_IMAGE = "image-to-image"
INPAINT = "inpaint"
OUTPAINT = "outpaint"
TASKS = (TEXT_TO_IMAGE, IMAGE_TO_IMAGE, INPAINT, OUTPAINT)
CONTROL_TYPES = ("canny", "depth", "pose")

MAX_SIDE = 4096
MAX_STEPS = 1000
MAX_IMAGES = 256
MAX_GUIDANCE = 100.0
MAX_PAG_SCALE = 100.0
MAX_SEED = 2**63 - 1 - MAX_IMAGES  # image i uses seed + i, which must stay a signed 64-bit number
MAX_PROMPT_CHARS = 10_000  # the model reads 256 tokens; this only keeps absurd inputs out of the tokenizer
MAX_FEATHER = 1024
MAX_LORA_WEIGHT = 100.0
MAX_ADAPTER_SCALE = 10.0
MAX_CONTROLS = 8
MAX_LORAS = 16

# Keys a stored parameters record may hold besides the request's own fields: where and with what the image was
# made. They are accepted (and ignored) by :meth:`GenerationRequest.from_dict`.
PROVENANCE_KEYS = ("model", "device", "dtype", "kolors_version", "lora_hashes", "text_encoder_quant")


def _fail(message: str) -> InvalidParameterError:
    return InvalidParameterError(message)


# --- value checks (one line each, naming the field) -------------------------------------------------------------
def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise _fail(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise _fail(f"{name} must be between {low} and {high}, got {value}")
    return value


def _float(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or not low <= value <= high:
        raise _fail(f"{name} must be between {low:g} and {high:g}, got {value}")
    return float(value)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(f"{name} must be text, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8 on the command line
        raise _fail(f"{name} is not valid UTF-8 text: check the terminal's or the file's encoding") from None
    if len(value) > MAX_PROMPT_CHARS:
        raise _fail(f"{name} is {len(value)} characters long, more than {MAX_PROMPT_CHARS}: the model reads "
                    "only its first 256 tokens, so shorten it")
    return value


def _pair(name: str, value: Any) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _fail(f"{name} must be two whole numbers (height, width), got {value!r}")
    return _int(f"{name}[0]", value[0], 0, 16 * MAX_SIDE), _int(f"{name}[1]", value[1], 0, 16 * MAX_SIDE)


def _is_image_object(value: Any) -> bool:
    return not isinstance(value, (str, Path)) and value is not None


def image_field(value: Any) -> Any:
    """A file input as stored: a path as text (``~`` expanded, made absolute), or the in-memory object."""
    if isinstance(value, Path) or isinstance(value, str):
        return str(Path(value).expanduser().absolute())
    return value


def _record_image(value: Any) -> str | None:
    """The JSON form of an image input: its path, or None for an in-memory image."""
    return value if isinstance(value, str) else None


def _known_keys(name: str, data: Mapping[str, Any], cls: type, extra: Sequence[str] = ()) -> None:
    if not isinstance(data, Mapping):
        raise _fail(f"{name} must be an object with named settings, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)} | set(extra)
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise _fail(f"unknown {name} setting '{unknown[0]}': use {', '.join(sorted(known - set(extra)))}")


# --- the parts of a request ------------------------------------------------------------------------------------
@dataclass
class Control:
    """One ControlNet input.

    type: "canny", "depth" or "pose" (or a name given to ``Pipeline.add_controlnet``). image: a path or PIL image — a photo for canny (edges are computed), a ready
    map for depth/pose (or a photo with ``detect=True``: the pipeline's annotators make the map). scale: how strongly
    the ControlNet steers (0 turns it off). start, end: the fraction of the steps in which it acts (step i of n when
    start <= i/n and (i+1)/n <= end). controlnet: its folder (default: the pipeline's ControlNet for the type).
    detect: whether ``image`` is turned into a map first (default: True for canny, False otherwise).
    thresholds: canny's low/high thresholds.
    """

    type: str
    image: Any = None
    scale: float = CONTROL_SCALE
    start: float = CONTROL_START
    end: float = CONTROL_END
    controlnet: str | None = None
    detect: bool | None = None
    thresholds: tuple[int, int] = CANNY_THRESHOLDS

    def validate(self) -> None:
        if not isinstance(self.type, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", self.type):
            raise _fail(f"unknown control type {self.type!r}: use {', '.join(CONTROL_TYPES)}")
        if self.image is None:
            raise _fail(f"the {self.type} control needs an image")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not math.isfinite(
                self.scale) or self.scale < 0:
            raise _fail(f"control scale must be a number >= 0, got {self.scale!r}")
        if self.scale > MAX_ADAPTER_SCALE:
            raise _fail(f"control scale must be at most {MAX_ADAPTER_SCALE:g}, got {self.scale}")
        for name in ("start", "end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise _fail(f"control {name} must be a number between 0 and 1, got {value!r}")
        if not 0.0 <= self.start < self.end <= 1.0:
            raise _fail(f"control start/end must satisfy 0 <= start < end <= 1, got {self.start}/{self.end}")
        self.scale, self.start, self.end = float(self.scale), float(self.start), float(self.end)
        if not isinstance(self.thresholds, (list, tuple)) or len(self.thresholds) != 2:
            raise _fail(f"canny thresholds must be two whole numbers LOW,HIGH, got {self.thresholds!r}")
        low, high = (_int("canny threshold", v, 0, 255) for v in self.thresholds)
        if low > high:
            raise _fail(f"canny thresholds must satisfy low <= high, got {low},{high}")
        self.thresholds = (low, high)
        if isinstance(self.image, (str, Path)):
            self.image = image_field(self.image)
        if self.controlnet is not None:
            self.controlnet = str(self.controlnet)
        if self.detect is not None and not isinstance(self.detect, bool):
            raise _fail(f"control detect must be true or false, got {self.detect!r}")
        check_image_input(self.image, f"--control {self.type}: image")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "image": _record_image(self.image), "scale": self.scale,
                                "start": self.start, "end": self.end}
        if self.controlnet is not None:
            data["controlnet"] = str(self.controlnet)
        if self.detect is not None:
            data["detect"] = self.detect
        if self.type == "canny" and tuple(self.thresholds) != CANNY_THRESHOLDS:
            data["thresholds"] = list(self.thresholds)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Control:
        _known_keys("control", data, cls)
        if "type" not in data:
            raise _fail("a control needs a type (canny, depth or pose)")
        values = dict(data)
        if "image" in values and values["image"] is not None:
            values["image"] = image_field(values["image"])
        if isinstance(values.get("thresholds"), list):
            values["thresholds"] = tuple(values["thresholds"])
        return cls(**values)


@dataclass
class Lora:
    """A LoRA to apply: a ``.safetensors`` file (or a Kolors DreamBooth checkpoint folder) at ``weight``."""

    path: str
    weight: float = 1.0

    def validate(self) -> None:
        if not isinstance(self.path, (str, Path)) or not str(self.path):
            raise _fail(f"a LoRA needs the path of its file, got {self.path!r}")
        self.weight = _float(f"weight of LoRA {Path(self.path).name}", self.weight, -MAX_LORA_WEIGHT,
                             MAX_LORA_WEIGHT)
        if not Path(self.path).expanduser().exists():
            raise _fail(f"LoRA file not found: {self.path}")
        self.path = image_field(self.path)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "weight": self.weight}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lora:
        # Stored records (kolors 0.1) also hold the adapter's name, file name and hash: informative only.
        _known_keys("LoRA", data, cls, extra=("name", "file", "sha256", "hash"))
        path = data.get("path") or data.get("file")
        if path is None:
            raise _fail("a LoRA needs the path of its file")
        return cls(path=image_field(path), weight=data.get("weight", 1.0))


@dataclass
class ImagePrompt:
    """Kolors-IP-Adapter-Plus: ``image`` steers the picture at ``scale``; ``model`` is the adapter folder."""

    model: str
    image: Any
    scale: float = IP_ADAPTER_SCALE

    def validate(self) -> None:
        if not self.model:
            raise _fail("the IP-Adapter needs its model folder (Kwai-Kolors/Kolors-IP-Adapter-Plus)")
        self.scale = _float("IP-Adapter scale", self.scale, 0.0, MAX_ADAPTER_SCALE)
        self.model = str(self.model)
        if isinstance(self.image, (str, Path)):
            self.image = image_field(self.image)
        check_image_input(self.image, "IP-Adapter image")

    def to_dict(self) -> dict[str, Any]:
        return {"model": str(self.model), "image": _record_image(self.image), "scale": self.scale}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImagePrompt:
        _known_keys("IP-Adapter", data, cls)
        values = dict(data)
        if values.get("image") is not None:
            values["image"] = image_field(values["image"])
        return cls(**values)


@dataclass
class FaceId:
    """Kolors-IP-Adapter-FaceID-Plus: a face photo, or a 512-d embedding (.npy/.pt, array) with its face crop
    ``image``; ``model`` is the adapter folder."""

    model: str
    face: Any
    image: Any = None
    scale: float = FACE_ID_SCALE

    def validate(self) -> None:
        if not self.model:
            raise _fail("FaceID needs its model folder (Kwai-Kolors/Kolors-IP-Adapter-FaceID-Plus)")
        self.scale = _float("FaceID scale", self.scale, 0.0, MAX_ADAPTER_SCALE)
        self.model = str(self.model)
        self.face, self.image = (image_field(v) if isinstance(v, (str, Path)) else v for v in (self.face, self.image))
        if self.face is None:
            raise _fail("FaceID needs a face photo or a face embedding")
        if isinstance(self.face, str) and Path(self.face).suffix.lower() in (".npy", ".pt", ".pth"):
            if not Path(self.face).is_file():
                raise _fail(f"face embedding not found: {self.face}")
            if self.image is None:
                raise _fail(f"the face embedding {Path(self.face).name} needs the face image too (--face-image)")
        elif not hasattr(self.face, "shape"):  # a photo (arrays and tensors are embeddings)
            check_image_input(self.face, "face image")
        if self.image is not None:
            check_image_input(self.image, "face image")

    def to_dict(self) -> dict[str, Any]:
        data = {"model": str(self.model), "face": _record_image(self.face), "scale": self.scale}
        if self.image is not None:
            data["image"] = _record_image(self.image)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaceId:
        _known_keys("FaceID", data, cls)
        values = dict(data)
        for key in ("face", "image"):
            if values.get(key) is not None:
                values[key] = image_field(values[key])
        return cls(**values)


# --- the request -----------------------------------------------------------------------------------------------
@dataclass
class GenerationRequest:
    """Everything one generation needs. ``None`` means "the model's / the task's default"."""

    prompt: str
    negative_prompt: str | None = None
    task: str | None = None  # None: from the inputs (extend -> outpaint, mask -> inpaint, image -> image-to-image)
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    # Classifier-free guidance only in this first fraction of the steps (diffusers' guider ``stop``): the steps
    # after it use the conditional prediction alone. None: the model's (1.0, every step, for Kolors).
    guidance_stop: float | None = None
    scheduler: str | None = None
    seed: int | None = None  # image i uses seed + i; None: a random seed
    num_images: int = 1
    batch_size: int | None = None  # images denoised together (None: all)
    init_image: Any = None  # path or PIL image: image-to-image, inpaint, outpaint
    # (1, C, h, w) latents of init_image, scaled as the pipeline's (e.g. a ComfyUI LATENT): the generation starts
    # from them instead of encoding init_image (which still gives the size, the mask's canvas and kept pixels).
    # In memory only: not part of the JSON form.
    init_latents: Any = None
    strength: float | None = None
    mask: Any = None  # inpaint: white = redraw
    feather: int | None = None  # inpaint/outpaint: blend ramp in pixels
    resize_mask: bool = False
    extend: tuple[int, int, int, int] | None = None  # outpaint: left, top, right, bottom pixels
    controls: list[Control] = field(default_factory=list)
    loras: list[Lora] | None = None  # None: the LoRAs attached to the pipeline (load_lora); []: none
    ip_adapter: ImagePrompt | None = None
    face_id: FaceId | None = None
    pag_scale: float = 0.0
    pag_layers: tuple[str, ...] | None = None
    original_size: tuple[int, int] | None = None  # SDXL micro-conditioning, (height, width)
    target_size: tuple[int, int] | None = None
    crop_coords: tuple[int, int] = (0, 0)
    mode: str | None = None  # a run mode whose per-call levers apply (see kolors.performance.modes)

    # --- the task ---------------------------------------------------------------------------------------------
    @property
    def resolved_task(self) -> str:
        """The task, from the inputs when it was not named."""
        if self.task is not None:
            return self.task
        if self.extend is not None:
            return OUTPAINT
        if self.mask is not None:
            return INPAINT
        if self.init_image is not None or self.init_latents is not None:
            return IMAGE_TO_IMAGE
        return TEXT_TO_IMAGE

    # --- checks -----------------------------------------------------------------------------------------------
    def validate(self) -> GenerationRequest:
        """Check every value that needs no model; returns the request (values normalised) or raises
        :class:`~kolors.errors.InvalidParameterError` with one line naming the field and the fix."""
        from .schedulers import SCHEDULER_NAMES

        if self.prompt is None:
            raise _fail('no prompt given: e.g. GenerationRequest("a red circle")')
        self.prompt = _text("prompt", self.prompt)
        if self.negative_prompt is not None:
            self.negative_prompt = _text("negative prompt", self.negative_prompt)
        self.init_image, self.mask = (image_field(v) if isinstance(v, (str, Path)) else v
                                      for v in (self.init_image, self.mask))
        task = self.resolved_task
        if task not in TASKS:
            raise _fail(f"unknown task '{task}': use {', '.join(TASKS)}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None:
                value = _int(name, value, -(2**63), 2**63)
                if value <= 0:
                    raise _fail(f"{name} must be a positive number of pixels, got {value}")
                if value > MAX_SIDE:
                    raise _fail(f"{name} {value} is larger than {MAX_SIDE} pixels: generate smaller and upscale")
                if value % 8:
                    raise _fail(f"{name} {value} is not a multiple of 8: try {max(8, value // 8 * 8)}")
                setattr(self, name, value)
        if self.steps is not None:
            self.steps = _int("steps", self.steps, 1, MAX_STEPS)
        if self.guidance is not None:
            self.guidance = _float("guidance", self.guidance, 0.0, MAX_GUIDANCE)
        if self.guidance_stop is not None:
            self.guidance_stop = _float("guidance-stop", self.guidance_stop, 0.0, 1.0)
        if self.scheduler is not None and self.scheduler not in SCHEDULER_NAMES:
            raise _fail(f"unknown scheduler '{self.scheduler}': use one of {', '.join(SCHEDULER_NAMES)}")
        self.num_images = _int("num-images", self.num_images, 1, MAX_IMAGES)
        if self.seed is not None:
            self.seed = _int("seed", self.seed, 0, MAX_SEED)
        if self.batch_size is not None:
            self.batch_size = _int("batch-size", self.batch_size, 1, MAX_IMAGES)
        if self.mode is not None and self.mode not in MODES:
            raise _fail(f"unknown mode '{self.mode}': use one of {', '.join(MODES)}")
        self._validate_guidance_extras()
        self._validate_task(task)
        self._validate_adapters()
        for name in ("original_size", "target_size", "crop_coords"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _pair(name.replace("_", " "), value))
        return self

    def _validate_guidance_extras(self) -> None:
        self.pag_scale = _float("pag-scale", self.pag_scale or 0.0, 0.0, MAX_PAG_SCALE)
        if self.pag_layers is not None:
            layers = self.pag_layers
            if isinstance(layers, str):
                layers = [part.strip() for part in layers.split(",")]
            if not isinstance(layers, (list, tuple)) or not layers or any(
                    not isinstance(x, str) or not x for x in layers):
                raise _fail(f"pag-layers must be layer names such as 'mid' or 'down_blocks.2', got {layers!r}")
            for layer in layers:
                try:
                    re.compile(layer)
                except re.error as exc:
                    raise _fail(f"pag-layers: '{layer}' is not a valid pattern ({exc})") from None
            self.pag_layers = tuple(layers)
            if not self.pag_scale:
                raise _fail("--pag-layers goes with --pag-scale above 0 (e.g. --pag-scale 3)")

    def _validate_task(self, task: str) -> None:
        if self.init_latents is not None:
            self._validate_init_latents(task)
        needs_image = task != TEXT_TO_IMAGE
        if needs_image and self.init_image is None:
            raise _fail(f"{task} needs an input image (--image FILE)")
        if not needs_image and self.init_image is not None:
            raise _fail("an input image goes with image-to-image, inpaint or outpaint")
        if self.mask is not None and task != INPAINT:
            raise _fail("a mask goes with inpaint")
        if task == INPAINT and self.mask is None:
            raise _fail("inpaint needs a mask (--mask FILE: white = redraw, black = keep)")
        if self.extend is not None and task != OUTPAINT:
            raise _fail("extend goes with outpaint")
        if self.feather is not None:
            if task not in (INPAINT, OUTPAINT):
                raise _fail("feather goes with inpaint or outpaint")
            self.feather = _int("feather", self.feather, 0, MAX_FEATHER)
        if self.strength is not None:
            if task == TEXT_TO_IMAGE:
                raise _fail("strength goes with an input image (image-to-image, inpaint, outpaint)")
            self.strength = _float("strength", self.strength, 0.0, 1.0)
        size = check_image_input(self.init_image, "image") if needs_image else None
        if task == INPAINT:
            mask_size = check_image_input(self.mask, "mask")
            if size and mask_size and mask_size != size and not self.resize_mask:
                name = Path(self.mask).name if isinstance(self.mask, str) else "the mask"
                raise _fail(f"{name} is {mask_size[0]}×{mask_size[1]} but the image is {size[0]}×{size[1]}: "
                            "resize the mask or pass --resize-mask")
            if open_mask(self.mask).point(lambda v: 255 if v >= 128 else 0).getbbox() is None:
                raise _fail("the mask has no white (redraw) pixels: nothing to inpaint (paint the part to redraw "
                            "white)")
        if task == OUTPAINT:
            self._validate_extend(size)
        elif task == IMAGE_TO_IMAGE and size and self.width is None and self.height is None:
            if max(size) > MAX_SIDE:
                raise _fail(f"the image is {size[0]}×{size[1]}, larger than {MAX_SIDE} pixels: pass "
                            "--width/--height to redraw it at a smaller size")

    def _validate_init_latents(self, task: str) -> None:
        if task not in (IMAGE_TO_IMAGE, INPAINT):
            raise _fail("input latents go with image-to-image or inpaint")
        if self.init_image is None:
            raise _fail("input latents go with the image they encode (init_image)")
        shape = tuple(getattr(self.init_latents, "shape", ()))
        if len(shape) != 4 or shape[0] != 1:
            raise _fail(f"input latents must be one (1, channels, height, width) array, got shape {shape or None}")

    def _validate_extend(self, size: tuple[int, int] | None) -> None:
        if self.extend is None:
            raise _fail("outpaint needs --extend LEFT,TOP,RIGHT,BOTTOM or --expand PX")
        sides = [self.extend] * 4 if isinstance(self.extend, int) else self.extend
        if not isinstance(sides, (list, tuple)) or len(sides) != 4:
            raise _fail(f"extend must be 4 pixel counts (left, top, right, bottom), got {self.extend!r}")
        sides = [_int("extend", v, 0, MAX_SIDE) for v in sides]
        if not any(sides):
            raise _fail("extend must grow at least one side (all four are 0)")
        if size is not None:
            grown = (size[0] + sides[0] + sides[2], size[1] + sides[1] + sides[3])
            if max(grown) > MAX_SIDE:
                raise _fail(f"the outpainted canvas would be {grown[0]}×{grown[1]}, larger than {MAX_SIDE} pixels: "
                            "extend less")
            canvas = tuple(-(-side // 8) * 8 for side in grown)  # right/bottom grow to multiples of 8
            asked = (self.width or canvas[0], self.height or canvas[1])
            if asked != canvas:
                raise _fail("outpaint takes its size from the image and --extend: drop --width/--height")
        self.extend = tuple(sides)

    def _validate_adapters(self) -> None:
        if len(self.controls) > MAX_CONTROLS:
            raise _fail(f"at most {MAX_CONTROLS} controls, got {len(self.controls)}")
        for control in self.controls:
            control.validate()
        if self.loras is not None:
            if len(self.loras) > MAX_LORAS:
                raise _fail(f"at most {MAX_LORAS} LoRAs, got {len(self.loras)}")
            for lora in self.loras:
                lora.validate()
        if self.ip_adapter is not None:
            self.ip_adapter.validate()
        if self.face_id is not None:
            self.face_id.validate()

    # --- JSON form --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON-serialisable form (what a PNG stores): values left at their default are left out, images are
        paths (None for in-memory images)."""
        data: dict[str, Any] = {"prompt": self.prompt, "negative_prompt": self.negative_prompt,
                                "task": self.resolved_task}
        for f in dataclasses.fields(self):
            if f.name in data or f.name == "init_latents":  # in memory only
                continue
            value = getattr(self, f.name)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if value is None or value == default or (isinstance(value, list) and not value):
                continue
            if f.name in ("init_image", "mask"):
                value = _record_image(value)
            elif f.name == "controls":
                value = [c.to_dict() for c in value]
            elif f.name == "loras":
                value = [lora.to_dict() for lora in value]
            elif f.name in ("ip_adapter", "face_id"):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            if value is not None:
                data[f.name] = value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, strict: bool = True) -> GenerationRequest:
        """The request a JSON form (or a stored parameters record, provenance keys included) describes.

        ``strict``: unknown keys are errors (the server); else they are ignored (records of other tools)."""
        if not isinstance(data, Mapping):
            raise _fail(f"a generation request is a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in data if k not in names and k not in PROVENANCE_KEYS)
        if unknown and strict:
            raise _fail(f"unknown setting '{unknown[0]}': see GenerationRequest's fields (kolors.request)")
        values = {k: v for k, v in data.items() if k in names}
        if "prompt" not in values:
            raise _fail("no prompt given")
        for key in ("init_image", "mask"):
            if values.get(key) is not None:
                values[key] = image_field(values[key])
        values["controls"] = [Control.from_dict(c) for c in _list("controls", values.get("controls"))]
        if values.get("loras") is not None:
            values["loras"] = [Lora.from_dict(x) for x in _list("loras", values["loras"])]
        if values.get("ip_adapter") is not None:
            values["ip_adapter"] = ImagePrompt.from_dict(values["ip_adapter"])
        if values.get("face_id") is not None:
            values["face_id"] = FaceId.from_dict(values["face_id"])
        for key in ("extend", "pag_layers", "original_size", "target_size", "crop_coords"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)

    def replace(self, **changes: Any) -> GenerationRequest:
        """A copy with ``changes`` applied (the parts' lists copied, so the copy can be changed on its own)."""
        copy = dataclasses.replace(self, **changes)
        if "controls" not in changes:
            copy.controls = [dataclasses.replace(c) for c in self.controls]
        if "loras" not in changes and self.loras is not None:
            copy.loras = [dataclasses.replace(x) for x in self.loras]
        return copy

    def batch_key(self) -> tuple:
        """What must be equal for two requests' images to be denoised in one batch: everything but the prompts,
        the seed and the image count (JSON text of the rest; in-memory images by identity)."""
        import json

        data = self.to_dict()
        for key in ("prompt", "negative_prompt", "seed", "num_images", "batch_size"):
            data.pop(key, None)
        objects = tuple(id(v) for v in (self.init_image, self.mask, self.init_latents) if _is_image_object(v))
        return json.dumps(data, sort_keys=True, default=str), objects


def _list(name: str, value: Any) -> list:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise _fail(f"{name} must be a list, got {type(value).__name__}")
    return list(value)
