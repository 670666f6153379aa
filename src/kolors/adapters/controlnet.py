"""Kolors ControlNets (Kolors-ControlNet-Canny / -Depth / -Pose): loading and the per-step residuals.

The published ControlNets are diffusers ``ControlNetModel`` folders whose text conditioning, like the Kolors UNet's,
is the 4096-wide ChatGLM embedding (``encoder_hid_dim_type`` "text_proj") plus pooled and size conditioning
(``addition_embed_type`` "text_time"). The ControlNet projects the embeddings with its own ``encoder_hid_proj``
before its blocks, as the official Kolors ControlNet class does; diffusers' ``ControlNetModel.forward`` does not
apply that projection itself, so :class:`ControlNetConditioner` does.
"""

from __future__ import annotations

import inspect
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from ..defaults import CONTROL_END, CONTROL_SCALE, CONTROL_START
from ..diffusion.conditioning import Conditioner
from ..errors import KolorsError, ModelLayoutError
from ..loading.components import load_diffusers_model
from ..loading.locate import EMBEDDED_MODEL_DIR, conventional_controlnet_folder, locate_model, read_json

MAX_LOADED = 4  # ControlNets kept loaded for requests that name a folder (registered ones come on top)

# Settings of the official Kolors ControlNet scripts.
DEFAULT_SCALE = CONTROL_SCALE
DEFAULT_START = CONTROL_START
DEFAULT_END = CONTROL_END


def embedded_controlnet(kind: str) -> Path | None:
    """The ControlNet shipped beside the built-in model for ``kind`` controls (``canny``), or None."""
    return conventional_controlnet_folder(kind, EMBEDDED_MODEL_DIR)


class ControlNetSet:
    """The ControlNets of one pipeline: one per control type to use by default (registered, or found where
    :func:`~kolors.loading.locate.conventional_controlnet_folder` looks), and those requests name by folder; each folder is loaded once (a bounded
    number of request ones are kept, least recently used dropped first)."""

    def __init__(self, pipe: Any, max_loaded: int = MAX_LOADED) -> None:
        self._pipe = pipe  # the owning pipeline: its device, dtype, UNet and model folder
        self.max_loaded = max_loaded
        self._registered: dict[str, ControlNetModel | Path] = {}
        self._by_folder: OrderedDict[Path, ControlNetModel] = OrderedDict()

    def register(self, kind: str, controlnet: str | os.PathLike | ControlNetModel) -> ControlNetModel:
        """Use ``controlnet`` (a folder, Hub id in the local cache, or a loaded model) for ``kind`` controls."""
        if isinstance(controlnet, ControlNetModel):
            self._registered[kind] = controlnet
            return controlnet
        folder = controlnet_folder(controlnet)
        model = self._load(folder, pinned=True)
        self._registered[kind] = folder
        return model

    def folder(self, kind: str, folder: str | os.PathLike | None = None) -> str | None:
        """The folder a ``kind`` control uses (``folder`` when given; None for a registered model object)."""
        if folder is not None:
            return str(controlnet_folder(folder).absolute())
        registered = self._registered.get(kind)
        if isinstance(registered, ControlNetModel):
            return None
        found = registered or conventional_controlnet_folder(kind, self._pipe.components.folder)
        if found is None:
            raise KolorsError(
                f"no ControlNet is loaded for '{kind}' controls: pass --controlnet {kind}=DIR (a "
                f"Kwai-Kolors/Kolors-ControlNet-{kind.title()} folder; Python: controlnets={{'{kind}': DIR}} or "
                f"Control(..., controlnet=DIR))")
        return str(Path(found).absolute())

    def model(self, kind: str, folder: str | os.PathLike | None = None) -> ControlNetModel:
        """The loaded ControlNet for a ``kind`` control (``folder``: the one it names)."""
        registered = self._registered.get(kind)
        if folder is None and isinstance(registered, ControlNetModel):
            return registered
        path = Path(self.folder(kind, folder))
        pinned = registered is not None and Path(registered).resolve() == path.resolve()
        return self._load(path, pinned=pinned)

    def _load(self, folder: Path, pinned: bool) -> ControlNetModel:
        key = folder.resolve()
        if key in self._by_folder:
            self._by_folder.move_to_end(key)
            return self._by_folder[key]
        pipe = self._pipe
        model = load_controlnet(folder, pipe.placement.storage, pipe.dtype, unet=pipe.components.unet,
                                vae_scale_factor=pipe.vae_scale_factor)
        self._by_folder[key] = model
        pinned_keys = {Path(f).resolve() for f in self._registered.values() if not isinstance(f, ControlNetModel)}
        if pinned:
            pinned_keys.add(key)
        unpinned = [k for k in self._by_folder if k not in pinned_keys and k != key]
        while len(self._by_folder) - len(pinned_keys & set(self._by_folder)) > self.max_loaded and unpinned:
            del self._by_folder[unpinned.pop(0)]
        return model


def controlnet_folder(folder: str | os.PathLike) -> Path:
    """The local folder of a ControlNet: a path, or a Hub id already in the local Hugging Face cache."""
    path = Path(folder).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLayoutError(f"a ControlNet is a folder (config.json + weights), not a file: {path}")
    if not str(folder).startswith((".", "/", "~")) and str(folder).count("/") == 1:
        return locate_model(str(folder))  # Hub id: the local cache only
    raise ModelLayoutError(f"ControlNet folder not found: {path}")


def load_controlnet(
    folder: str | os.PathLike,
    device: torch.device | str,
    dtype: torch.dtype,
    *,
    unet: UNet2DConditionModel | dict | None = None,
    vae_scale_factor: int | None = None,
) -> ControlNetModel:
    """A frozen ControlNet from its folder, on ``device`` in ``dtype``.

    With ``unet`` (the base model's UNet or its config) and ``vae_scale_factor``, the ControlNet is first checked
    to fit that base model; a misfit is a one-line :class:`KolorsError` naming the setting that differs.
    """
    path = controlnet_folder(folder)
    config = read_json(path / "config.json")
    if config.get("_class_name", "ControlNetModel") != "ControlNetModel":
        raise ModelLayoutError(
            f"{path} is not a ControlNet folder: its config.json describes a {config['_class_name']}"
        )
    if unet is not None:
        check_compatible(config, unet, vae_scale_factor=vae_scale_factor, name=str(path))
    variant = "fp16" if dtype in (torch.float16, torch.bfloat16) else None
    return load_diffusers_model(ControlNetModel, path, torch.device(device), dtype, variant=variant,
                                what="ControlNet", config=config)


def _with_defaults(cls: type, config: dict) -> dict:
    """``config`` completed with ``cls``'s defaults for the keys it leaves out (as ``from_config`` would)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return {**{p.name: p.default for p in params if p.default is not inspect.Parameter.empty}, **config}


def _text_width(config: dict) -> int | None:
    """How wide the text embeddings a model takes are: its text projection's input, else its cross-attention."""
    if config.get("encoder_hid_dim_type", "text_proj" if config.get("encoder_hid_dim") else None) == "text_proj":
        return config.get("encoder_hid_dim")
    return config.get("cross_attention_dim")


def check_compatible(controlnet: dict, unet: UNet2DConditionModel | dict, *, vae_scale_factor: int | None = None,
                     name: str = "") -> None:
    """Raise a one-line KolorsError when the ControlNet ``controlnet`` (a config) was not made for ``unet``."""
    base = dict(unet.config) if isinstance(unet, torch.nn.Module) else _with_defaults(UNet2DConditionModel, unet)
    cn = _with_defaults(ControlNetModel, controlnet)
    where = f" ({name})" if name else ""

    def differs(what: str, ours: Any, theirs: Any) -> KolorsError:
        return KolorsError(f"this ControlNet is for a different base model: its {what} is {ours}, "
                           f"the base model's is {theirs}{where}")

    if _text_width(cn) != _text_width(base):
        raise differs("text embedding width", _text_width(cn), _text_width(base))
    if cn.get("in_channels") != base.get("out_channels"):  # the ControlNet sees the latents, not extra channels
        raise differs("number of latent channels", cn.get("in_channels"), base.get("out_channels"))
    # The residuals must have the UNet's shapes: the same levels, widths and layers per level. Which blocks make
    # them (with or without attention) is the ControlNet's own affair (a light one has no attention).
    for key in ("cross_attention_dim", "addition_embed_type", "projection_class_embeddings_input_dim",
                "block_out_channels", "layers_per_block"):
        ours, theirs = cn.get(key), base.get(key)
        if isinstance(ours, (list, tuple)) and isinstance(theirs, (list, tuple)):
            ours, theirs = list(ours), list(theirs)
        if ours != theirs:
            raise differs(key, ours, theirs)
    if len(cn.get("down_block_types") or ()) != len(base.get("down_block_types") or ()):
        raise differs("number of down blocks", len(cn.get("down_block_types") or ()),
                      len(base.get("down_block_types") or ()))
    if vae_scale_factor is not None:
        channels = cn.get("conditioning_embedding_out_channels") or (16, 32, 96, 256)
        factor = 2 ** (len(channels) - 1)
        if factor != vae_scale_factor:
            raise differs("control-image downsampling", f"{factor}x", f"{vae_scale_factor}x (its VAE)")


class ControlNetConditioner(Conditioner):
    """Adds one ControlNet's residuals to the UNet at the steps inside its guidance window.

    ``image``: the control image, (1, 3, H, W) in [0, 1] at the output size. ``scale`` multiplies the residuals.
    Step i of n runs the ControlNet when ``start <= i/n`` and ``(i+1)/n <= end`` (diffusers' and the official
    scripts' rule); elsewhere it adds nothing. The same control image goes to every row of the batch, the
    unconditional half included (diffusers' behaviour without guess mode). Several conditioners' residuals add.
    """

    def __init__(self, controlnet: ControlNetModel, image: torch.Tensor, scale: float = DEFAULT_SCALE,
                 start: float = DEFAULT_START, end: float = DEFAULT_END) -> None:
        if image.ndim != 4 or image.shape[:2] != (1, 3):
            raise ValueError(f"the control image must be a (1, 3, H, W) tensor, got {tuple(image.shape)}")
        self.controlnet = controlnet
        self.image = image
        self.scale = float(scale)
        self.start = float(start)
        self.end = float(end)
        self._steps = 0
        self._image = image

    def begin(self, scheduler: Any, generators: list[torch.Generator], latents: torch.Tensor,
              timesteps: torch.Tensor) -> None:
        self._steps = len(timesteps)
        self._image = self.image.to(latents.device, self.controlnet.dtype)

    def modules(self) -> list[torch.nn.Module]:
        return [self.controlnet]

    def active(self, step: int) -> bool:
        """Whether step ``step`` (0-based, of the steps this batch runs) is inside the guidance window."""
        n = self._steps
        return self.scale != 0 and step / n >= self.start and (step + 1) / n <= self.end

    def unet_kwargs(self, model_in: torch.Tensor, t: torch.Tensor, progress: float, context: torch.Tensor,
                    added: dict[str, torch.Tensor]) -> dict[str, Any]:
        if not self.active(round(progress * self._steps)):
            return {}
        return controlnet_residuals(self.controlnet, model_in, t, context, added,
                                    self._image.expand(model_in.shape[0], -1, -1, -1), scale=self.scale)


def controlnet_residuals(controlnet: ControlNetModel, sample: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                         added: dict[str, torch.Tensor], image: torch.Tensor, scale: float = 1.0) -> dict[str, Any]:
    """The UNet keyword arguments carrying one ControlNet's residuals (what training and generation both use).

    ``context``: the text-encoder embeddings as the UNet takes them (4096 wide for Kolors); the ControlNet's own
    ``encoder_hid_proj`` projects them first, as the official Kolors ControlNet class does. ``image``: the control
    images, (B, 3, H, W) in [0, 1] at the output size. ``controlnet`` may be wrapped (DDP): its forward is called.
    """
    inner = getattr(controlnet, "module", controlnet)
    if inner.encoder_hid_proj is not None and inner.config.encoder_hid_dim_type == "text_proj":
        context = inner.encoder_hid_proj(context)
    down, mid = controlnet(sample, t, encoder_hidden_states=context, controlnet_cond=image,
                           conditioning_scale=scale, added_cond_kwargs=added, return_dict=False)
    return {"down_block_additional_residuals": list(down), "mid_block_additional_residual": mid}
