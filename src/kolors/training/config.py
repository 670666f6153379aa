"""`kolors train` settings: one dataclass, read from a YAML or TOML file, with ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidParameterError, KolorsError

MODES = ("full", "lora", "dreambooth", "controlnet")
CONTROLNET_BLOCKS = ("full", "light")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")  # auto: bf16 (fp16 without bf16 support) on a GPU, no on a CPU
LR_SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")


@dataclass
class TrainConfig:
    """Every setting of a training run (the keys of a config file)."""

    # what to train, on what, where to
    model: str | None = None  # model folder or cached Hub id (None: $KOLORS_MODEL, else the built-in model)
    data: str | None = None  # image folder (metadata.jsonl, or a .txt caption beside each image)
    output: str = "train-output"
    # full | lora | dreambooth (LoRA with instance/class prompts and prior preservation) | controlnet
    mode: str = "lora"
    # optimisation
    steps: int = 1000  # optimizer steps
    batch_size: int = 1  # images per process per micro-step
    gradient_accumulation: int = 1
    lr: float = 1e-4
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    weight_decay: float = 1e-2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8  # smaller for models whose gradients are tiny (a small ControlNet's: 1e-15)
    max_grad_norm: float = 1.0
    use_8bit_adam: bool = False  # bitsandbytes AdamW8bit when importable, else AdamW with a note
    mixed_precision: str = "auto"  # auto | no | fp16 | bf16
    gradient_checkpointing: bool = False
    ema: bool = False  # keep an EMA of the trained weights and save it as the result
    ema_decay: float = 0.9999
    seed: int = 0
    snr_gamma: float | None = None  # Min-SNR-γ loss weighting (e.g. 5.0); None: plain MSE
    # LoRA
    rank: int = 16
    lora_alpha: float | None = None  # None: equal to rank
    lora_targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    train_text_encoder: bool = False  # LoRA on ChatGLM's query_key_value / dense layers too
    text_encoder_lr: float | None = None  # None: lr
    # ControlNet (mode: controlnet): the data's metadata.jsonl names a conditioning_image per row
    controlnet_blocks: str = "full"  # full: a copy of the UNet's encoder; light: no attention (training/controlnet_model.py)
    controlnet_from: str | None = None  # continue training this ControlNet folder instead of starting from the UNet
    conditioning_channels: list[int] | None = None  # control-image encoder widths; None: diffusers' (16, 32, 96, 256)
    # the conditioning scale the ControlNet is trained at, and so the one at which it has its trained strength:
    # 1.0 as diffusers' trainer; 0.7 for use at the Kolors default scale (kolors generate --control)
    controlnet_scale: float = 1.0
    # data
    resolution: int | None = None  # target area is resolution²; None: the model's native size
    buckets: bool = True  # aspect-ratio bucketing (else centre-crop squares)
    caption_dropout: float = 0.1  # share of captions replaced by "" (for classifier-free guidance)
    cache_latents: bool = False  # VAE encodings stored under OUTPUT/cache/ and reused
    cache_text: bool = False  # prompt embeddings stored under OUTPUT/cache/ (not with train_text_encoder)
    num_workers: int = 0
    # DreamBooth
    instance_prompt: str | None = None
    class_prompt: str | None = None
    class_data: str | None = None  # class images; missing ones (up to num_class_images) are generated
    num_class_images: int = 100
    prior_loss_weight: float = 1.0
    # checkpoints, logs, samples
    checkpoint_every: int = 500
    keep_checkpoints: int | None = 3  # None: keep all
    resume: str | None = None  # "latest" or a checkpoint folder
    log_every: int = 1
    tensorboard: bool = True  # used when tensorboard is installed (`pip install kolors[train]`)
    sample_every: int = 0  # 0: no samples
    sample_prompts: list[str] = field(default_factory=list)
    sample_steps: int = 20
    progress: bool = True

    def validate(self, source: str | Mapping[str, str] = "the config") -> TrainConfig:
        """Self, after checking values that would only fail later. Errors name where the value came from:
        ``source``, or per key ``source[key]`` (a file, ``--set key=value`` or a flag such as ``--lr``)."""
        def bad(key: str, why: str) -> KolorsError:
            origin = source if isinstance(source, str) else _origin(source, key)
            if origin.startswith("--") and not origin.startswith("--set"):
                return InvalidParameterError(f"{origin} {why}")
            return InvalidParameterError(f"{origin}: '{key}' {why}")

        if self.mode not in MODES:
            raise bad("mode", f"must be one of {', '.join(MODES)}, got '{self.mode}'")
        if self.mixed_precision not in MIXED_PRECISION:
            raise bad("mixed_precision", f"must be one of {', '.join(MIXED_PRECISION)}, got '{self.mixed_precision}'")
        if self.lr_schedule not in LR_SCHEDULES:
            raise bad("lr_schedule", f"must be one of {', '.join(LR_SCHEDULES)}, got '{self.lr_schedule}'")
        for key in ("steps", "batch_size", "gradient_accumulation", "rank", "checkpoint_every", "log_every",
                    "num_class_images", "sample_steps"):
            if getattr(self, key) < 1:
                raise bad(key, f"must be at least 1, got {getattr(self, key)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise bad(f.name, f"must be a finite number, got {value}")
        for key in ("lr", "ema_decay", "adam_epsilon", "controlnet_scale"):
            if not getattr(self, key) > 0:
                raise bad(key, f"must be positive, got {getattr(self, key)}")
        if self.text_encoder_lr is not None and not self.text_encoder_lr > 0:
            raise bad("text_encoder_lr", f"must be positive, got {self.text_encoder_lr}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise bad("caption_dropout", f"must be in [0, 1), got {self.caption_dropout}")
        if self.resolution is not None and (self.resolution < 8 or self.resolution % 8):
            raise bad("resolution", f"must be a positive multiple of 8, got {self.resolution}")
        if self.data is None:
            raise bad("data", "is required: the image folder to train on (--data DIR)")
        if self.mode == "dreambooth" and not self.instance_prompt:
            raise bad("instance_prompt", "is required in dreambooth mode (e.g. 'a photo of sks dog')")
        if self.mode == "dreambooth" and self.class_prompt and not self.class_data:
            raise bad("class_data", "is required with class_prompt: a folder of class images (missing ones are "
                                    "generated)")
        if self.train_text_encoder and self.mode == "full":
            raise bad("train_text_encoder", "works with LoRA only (mode: lora or dreambooth)")
        if self.mode == "controlnet" and self.train_text_encoder:
            raise bad("train_text_encoder", "cannot be used in controlnet mode (only the ControlNet trains)")
        if self.controlnet_blocks not in CONTROLNET_BLOCKS:
            raise bad("controlnet_blocks", f"must be one of {', '.join(CONTROLNET_BLOCKS)}, got "
                                           f"'{self.controlnet_blocks}'")
        if self.conditioning_channels is not None and (not self.conditioning_channels
                                                       or min(self.conditioning_channels) < 1):
            raise bad("conditioning_channels", f"must be a list of positive widths, got {self.conditioning_channels}")
        if self.train_text_encoder and self.cache_text:
            raise bad("cache_text", "cannot be used with train_text_encoder (the embeddings change)")
        return self


def load_config(path: str | Path | None, overrides: list[str] | None = None, **flags: Any) -> TrainConfig:
    """The run's settings: ``path`` (YAML or TOML), then ``overrides`` ("key=value"), then non-None ``flags``.

    An error names where the bad value came from: the file, ``--set key=value``, or the flag (``--lr``)."""
    values: dict[str, Any] = {}
    origins = _Origins("the command line")
    if path is not None:
        path = Path(path).expanduser()
        values = read_config_file(path)
        origins = _Origins(str(path), dict.fromkeys(values, str(path)))
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise InvalidParameterError(f"--set expects key=value, got '{item}'")
        values[key.strip()] = _parse_value(text)
        origins[key.strip()] = f"--set {item}"
    given = {k: v for k, v in flags.items() if v is not None}
    values.update(given)
    origins.update({k: "--" + k.replace("_", "-") for k in given})
    return _build(values, origins).validate(origins)


class _Origins(dict):
    """Where each setting came from; keys left at their defaults are blamed on ``default`` (the file, if any)."""

    def __init__(self, default: str, *args: Any) -> None:
        super().__init__(*args)
        self.default = default

    def __missing__(self, key: str) -> str:
        return self.default


def _origin(origins: Mapping[str, str], key: str) -> str:
    try:
        return origins[key]
    except KeyError:
        return "the config"


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a ``.yaml``/``.yml``/``.toml``/``.json`` file (a ``[train]`` table/section is unwrapped)."""
    if path.is_dir():
        raise KolorsError(f"config file {path} is a folder: give a .yaml, .toml or .json file")
    if not path.is_file():
        raise KolorsError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise KolorsError(f"config file {path} is not a text file (not UTF-8): give a .yaml, .toml or .json "
                          "file") from None
    except OSError as exc:
        raise KolorsError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise KolorsError(f"config file {path}: unknown format '{suffix}' (use .yaml, .toml or .json)")
    except KolorsError:
        raise
    except Exception as exc:  # noqa: BLE001 - yaml/toml/json parse errors
        first = (str(exc).splitlines() or [""])[0]
        mark = getattr(exc, "problem_mark", None)  # YAML: where the parser gave up
        if mark is not None:
            first = f"{getattr(exc, 'problem', None) or first} at line {mark.line + 1}, column {mark.column + 1}"
        raise KolorsError(f"config file {path} is not valid {suffix.lstrip('.').upper()}: {first}") from None
    data = {} if data is None else data
    if isinstance(data, dict) and isinstance(data.get("train"), dict) and len(data) == 1:
        data = data["train"]
    if not isinstance(data, dict):
        raise KolorsError(f"config file {path} must hold a mapping of keys to values, not {type(data).__name__}")
    return data


def _parse_value(text: str) -> Any:
    """A --set value: YAML scalars and lists (numbers, true/false, null, [a, b]); plain text otherwise."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _build(values: dict[str, Any], origins: Mapping[str, str]) -> TrainConfig:
    """A TrainConfig from ``values``, each checked against the field's type (``origins``: where each came from)."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    hints = typing.get_type_hints(TrainConfig)
    unknown = [k for k in values if k not in fields]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], fields, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise InvalidParameterError(f"{_origin(origins, unknown[0])}: unknown key '{unknown[0]}'{hint}")
    return TrainConfig(**{k: _coerce(v, hints[k], k, _origin(origins, k)) for k, v in values.items()})


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """``value`` as the type ``hint`` names (ints accepted for floats, strings for paths), or an error."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" as text
            try:
                return float(value)
            except ValueError:
                pass
        if origin is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if origin is list and typing.get_args(option) == (int,) and isinstance(value, list):
            if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                return list(value)
        elif origin is list and isinstance(value, (list, str)):
            return [str(v) for v in ([value] if isinstance(value, str) else value)]
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options if o is not type(None))
    if source.startswith("--") and not source.startswith("--set"):
        raise InvalidParameterError(f"{source} must be {names}, got {value!r}")
    raise InvalidParameterError(f"{source}: '{key}' must be {names}, got {value!r}")
