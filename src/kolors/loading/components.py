"""Building the Kolors components (tokenizer, text encoder, UNet, VAE, scheduler) from a model folder."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ..devices import move
from ..errors import ModelLayoutError
from ..models.chatglm import ChatGLMConfig, ChatGLMModel, ChatGLMTokenizer
from .configs import DEFAULTS, SCHEDULER, TEXT_ENCODER, UNET, VAE, Rules, check_config
from .locate import check_model_folder, read_json
from .weights import find_weight_files, read_state_dict, read_weight_file

logger = logging.getLogger(__name__)

LDM_UNET_PREFIX = "model.diffusion_model."
CHATGLM_PREFIX = "transformer."
CHATGLM_HEAD = "output_layer.weight"
ModelT = TypeVar("ModelT", bound=torch.nn.Module)
T = TypeVar("T")


@dataclass
class KolorsComponents:
    """The loaded parts of a Kolors model and the folder-level settings that go with them."""

    tokenizer: ChatGLMTokenizer
    text_encoder: ChatGLMModel
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler: SchedulerMixin
    folder: Path
    force_zeros_for_empty_prompt: bool = False
    defaults: dict = field(default_factory=dict)


def load_components(
    folder: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    unet_file: Path | None = None,
    text_encoder_file: Path | None = None,
    vae_file: Path | None = None,
    text_encoder_head: bool = True,
    unet_dtype: torch.dtype | None = None,
) -> KolorsComponents:
    """Every component of the Kolors model in ``folder``, on ``device`` in ``dtype``.

    ``unet_file``/``text_encoder_file``/``vae_file`` replace the folder's weights with a single ``.safetensors``
    file (the folder's configs still describe the architecture; its weights for that part are not needed).
    ``text_encoder_head=False`` leaves out ChatGLM's language-model head, which text encoding never uses
    (65024×4096 for ChatGLM3: 0.5 GB in fp16).
    ``unet_dtype`` reads the UNet in another dtype than the rest (e.g. fp32 to train it, from the full-precision
    files when the folder has them).
    """
    index = check_model_folder(folder)
    variant = _variant(dtype)
    defaults_path = folder / "kolors_defaults.json"
    return KolorsComponents(
        tokenizer=load_tokenizer(folder / "tokenizer"),
        text_encoder=load_text_encoder(folder / "text_encoder", device, dtype, file=text_encoder_file, variant=variant,
                                       head=text_encoder_head),
        unet=load_unet(folder / "unet", device, unet_dtype or dtype, file=unet_file,
                       variant=_variant(unet_dtype or dtype)),
        vae=load_vae(folder / "vae", device, dtype, variant=variant, file=vae_file),
        scheduler=load_scheduler(folder / "scheduler"),
        folder=folder,
        force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", False)),
        defaults=check_config(read_json(defaults_path), DEFAULTS, defaults_path) if defaults_path.is_file() else {},
    )


def _variant(dtype: torch.dtype) -> str | None:
    """The weight-file variant preferred for ``dtype``."""
    return "fp16" if dtype in (torch.float16, torch.bfloat16) else None


def load_tokenizer(folder: Path) -> ChatGLMTokenizer:
    """The ChatGLM SentencePiece tokenizer (bundled tokenization_chatglm.py files are never imported)."""
    vocab = folder / "tokenizer.model"
    if not vocab.is_file():
        raise ModelLayoutError(f"tokenizer is incomplete: {vocab} is missing")
    try:
        return ChatGLMTokenizer(vocab_file=str(vocab))
    except Exception as exc:  # noqa: BLE001 - sentencepiece raises plain RuntimeError/OSError
        raise ModelLayoutError(f"cannot read tokenizer file {vocab} ({exc}): download it again") from None


def load_scheduler(folder: Path) -> SchedulerMixin:
    """The scheduler the checkpoint's ``scheduler_config.json`` names, with its settings."""
    import diffusers

    path = folder / "scheduler_config.json"
    config = check_config(read_json(path), SCHEDULER, path)
    name = config.get("_class_name", "")
    cls = getattr(diffusers, name, None) if isinstance(name, str) and name.endswith("Scheduler") else None
    if cls is None or not hasattr(cls, "from_config"):
        raise ModelLayoutError(f"unknown scheduler class {_short(name)} in {path}")
    return _build(lambda: cls.from_config(config), "scheduler", path, empty=False)


def load_text_encoder(
    folder: Path, device: torch.device, dtype: torch.dtype, *, file: Path | None = None, variant: str | None = None,
    head: bool = True,
) -> ChatGLMModel:
    """ChatGLM3 from ``config.json`` and its weights (sharded .bin, safetensors, or one single file).

    ``head=False``: without the unused language-model head (``output_layer``), which is then never read.
    """
    path = folder / "config.json"
    config = _build(lambda: ChatGLMConfig.from_dict(check_config(read_json(path), TEXT_ENCODER, path)),
                    "ChatGLM3 text encoder", path, empty=False)
    config.original_rope = getattr(config, "original_rope", True)
    model = _build(lambda: ChatGLMModel(config, empty_init=False), "ChatGLM3 text encoder", path)
    skip = set() if head else {CHATGLM_HEAD, CHATGLM_PREFIX + CHATGLM_HEAD}
    if not head:
        model.output_layer = None
    state = read_weight_file(file, skip=skip) if file else read_state_dict(find_weight_files(folder, variant), skip=skip)
    state = {k.removeprefix(CHATGLM_PREFIX): v for k, v in state.items()}
    _assign(model, state, f"text encoder ({file or folder})")
    return move(model, device=device, dtype=dtype).eval().requires_grad_(False)


def load_unet(
    folder: Path, device: torch.device, dtype: torch.dtype, *, file: Path | None = None, variant: str | None = None
) -> UNet2DConditionModel:
    """The UNet from its folder, or from a single file with diffusers or original (LDM/SGM) key names."""
    path = folder / "config.json"
    config = check_config(read_json(path), UNET, path)
    unet = _build(lambda: UNet2DConditionModel.from_config(config), "UNet", path)
    if file is None:
        state = read_state_dict(find_weight_files(folder, variant))
    else:
        state = _unet_single_file(read_weight_file(file), dict(unet.config))
    _assign(unet, state, f"UNet ({file or folder})")
    return move(unet, device=device, dtype=dtype).eval().requires_grad_(False)


def load_vae(folder: Path, device: torch.device, dtype: torch.dtype, *, variant: str | None = None,
             file: Path | None = None) -> AutoencoderKL:
    """The KL autoencoder in ``dtype`` (the pipeline upcasts decoding when the config asks for it), from its folder
    or from a single file with diffusers or original (LDM) key names."""
    if file is None:
        return load_diffusers_model(AutoencoderKL, folder, device, dtype, variant=variant, what="VAE")
    config = read_json(folder / "config.json")
    with init_empty_weights(include_buffers=False):
        vae = AutoencoderKL.from_config(config)
    state = read_weight_file(file)
    if "encoder.conv_in.weight" not in state:  # original names, bare or under a checkpoint's VAE prefix
        if not any(k.endswith("encoder.down.0.block.0.norm1.weight") for k in state):
            raise ModelLayoutError(f"the VAE file {file} holds neither diffusers nor original VAE key names")
        state = convert_ldm_vae_checkpoint(state, dict(vae.config))
    _assign(vae, state, f"VAE ({file})")
    return move(vae, device=device, dtype=dtype).eval().requires_grad_(False)


def load_diffusers_model(cls: type[ModelT], folder: Path, device: torch.device, dtype: torch.dtype, *,
                         variant: str | None = None, what: str = "model", config: dict | None = None) -> ModelT:
    """A diffusers model (``cls``) from a folder's ``config.json`` (or ``config``) and weight files, frozen."""
    path = folder / "config.json"
    config = read_json(path) if config is None else config
    check_config(config, _RULES.get(cls.__name__, {}), path)
    model = _build(lambda: cls.from_config(config), what, path)
    _assign(model, read_state_dict(find_weight_files(folder, variant)), f"{what} ({folder})")
    return move(model, device=device, dtype=dtype).eval().requires_grad_(False)


_RULES: dict[str, Rules] = {"AutoencoderKL": VAE, "UNet2DConditionModel": UNET, "ControlNetModel": UNET}


def _build(make: Callable[[], T], what: str, path: Path, *, empty: bool = True) -> T:
    """``make()`` (on the meta device when ``empty``), with a one-line error naming the config it came from."""
    try:
        with init_empty_weights(include_buffers=False) if empty else contextlib.nullcontext():
            return make()
    except ModelLayoutError:
        raise
    except Exception as exc:  # noqa: BLE001 - diffusers/transformers raise anything on a config they cannot use
        reason = _short((str(exc).splitlines() or [type(exc).__name__])[0], 120)
        raise ModelLayoutError(f"{path} does not describe a {what} that can be built ({reason}): fix the file "
                               "or download it again") from None


def _short(value: object, limit: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text) if len(text) <= limit else repr(text[:limit - 3] + "...")


def _unet_single_file(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """A diffusers-named UNet state dict from a single file in diffusers or original SDXL key names."""
    if "conv_in.weight" in state:
        return state
    if "input_blocks.0.0.weight" in state:  # original names saved without the model prefix
        state = {LDM_UNET_PREFIX + k: v for k, v in state.items()}
    if LDM_UNET_PREFIX + "input_blocks.0.0.weight" not in state:
        raise ModelLayoutError("the --unet file holds neither diffusers nor original SDXL UNet key names")
    converted = convert_ldm_unet_checkpoint(state, config)
    # Kolors' text projection has no SDXL counterpart: its diffusers name is kept as is.
    for key, value in state.items():
        short = key.removeprefix(LDM_UNET_PREFIX)
        if short.startswith("encoder_hid_proj."):
            converted[short] = value
    return converted


def _assign(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into a model built on the meta device; every parameter must be present."""
    expected = dict(model.named_parameters())
    missing = [k for k in expected if k not in state]
    if missing:
        raise ModelLayoutError(
            f"{what} weights do not match its config: {len(missing)} tensors missing (e.g. {missing[0]}); "
            "is it the right file for this model?"
        )
    bad = [k for k, p in expected.items() if tuple(state[k].shape) != tuple(p.shape)]
    if bad:
        k = bad[0]
        raise ModelLayoutError(
            f"{what} weights do not match its config: {k} has shape {tuple(state[k].shape)}, "
            f"expected {tuple(expected[k].shape)}"
        )
    known = set(expected) | {k for k, _ in model.named_buffers()}
    unexpected = [k for k in state if k not in known]
    if unexpected:
        logger.warning("%s: ignoring %d unexpected tensors (e.g. %s)", what, len(unexpected), unexpected[0])
    model.load_state_dict({k: v for k, v in state.items() if k in known}, strict=False, assign=True)
