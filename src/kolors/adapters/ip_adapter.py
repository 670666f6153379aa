"""Image prompts: Kolors-IP-Adapter-Plus (a reference image) and Kolors-IP-Adapter-FaceID-Plus (a face).

```python
from kolors.adapters.ip_adapter import load_ip_adapter, load_face_id, unload_ip_adapter
load_ip_adapter(pipe, "Kolors-IP-Adapter-Plus", image="ref.png", scale=0.5)
load_face_id(pipe, "Kolors-IP-Adapter-FaceID-Plus", face="face.png", scale=0.8)   # needs insightface
load_face_id(pipe, "Kolors-IP-Adapter-FaceID-Plus", face="emb.npy", image="crop.png")  # a ready embedding
result = pipe("一位穿红衣服的女士")     # every generation of ``pipe`` now uses them (also img2img, ControlNet)
unload_ip_adapter(pipe)                 # the UNet as it was
```

Published layouts (as loaded by the official Kolors scripts):

* ``Kwai-Kolors/Kolors-IP-Adapter-Plus``: ``ip_adapter_plus_general.bin`` (a pickled dict ``{"image_proj": …,
  "ip_adapter": …}``: the IP-Adapter-Plus resampler in the original IP-Adapter names ``latents``, ``proj_in``,
  ``layers.<i>.0.to_q``/``to_kv``/``to_out``/``norm1``/``norm2``, ``layers.<i>.1.{0,1,3}``, ``proj_out``,
  ``norm_out``; and ``<k>.to_k_ip.weight``/``<k>.to_v_ip.weight`` for the k-th attention processor, odd k) and
  ``image_encoder/`` (CLIP ViT-L/14 at 336 px, ``CLIPVisionModelWithProjection``). A ``.safetensors`` with the
  same tensors prefixed ``image_proj.`` / ``ip_adapter.`` is read too. The image features are the encoder's
  second-to-last hidden states; the negative ones encode an all-zero pixel tensor. Default scale 0.5.
  Loaded with diffusers' own IP-Adapter machinery (``UNet2DConditionModel._convert_ip_adapter_*``): the UNet's
  4096→2048 text projection is kept as ``text_encoder_hid_proj`` (what ``KolorsPipeline.load_ip_adapter`` does).
* ``Kwai-Kolors/Kolors-IP-Adapter-FaceID-Plus``: ``ipa-faceid-plus.bin`` (``{"image_proj": …, "adapter_modules":
  …}``) and ``clip-vit-large-patch14-336/``. A 512-d insightface (antelopev2) face embedding and the CLIP features
  of the square face crop become 6 tokens of the text width (4096) which are appended to the 256 text tokens
  and go through the UNet's own 4096→2048 text projection; the UNet's attention layers read them with their
  ``to_k_ip``/``to_v_ip``. The negative tokens come from a zero embedding and zero CLIP features. Default scale
  0.8. diffusers has no Kolors FaceID-Plus (its FaceID-Plus projection makes 4 tokens of the cross-attention
  width), so the projection is :class:`FaceIDPlusProjection` here; the attention layers are diffusers'.

Both adapters can be loaded together; each keeps its own scale.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InvalidParameterError, KolorsError, ModelLayoutError
from ..pipelines.conditioning import Conditioner

PLUS = "ip_adapter"
FACE_ID = "face_id"
DEFAULT_SCALES = {PLUS: 0.5, FACE_ID: 0.8}  # the official scripts' scales
PLUS_FILES = ("ip_adapter_plus_general.bin", "ip_adapter_plus_general.safetensors", "ip_adapter_plus_genernal.bin")
FACE_ID_FILES = ("ipa-faceid-plus.bin", "ipa-faceid-plus.safetensors")
ENCODER_FOLDERS = {PLUS: ("image_encoder",), FACE_ID: ("clip-vit-large-patch14-336", "image_encoder")}
NAMES = {PLUS: "IP-Adapter-Plus", FACE_ID: "IP-Adapter-FaceID-Plus"}
ANTELOPEV2_FILES = ("1k3d68.onnx", "2d106det.onnx", "genderage.onnx", "glintr100.onnx", "scrfd_10g_bnkps.onnx")
EMBEDDING_SUFFIXES = (".npy", ".pt", ".pth")
_IP_KEY = re.compile(r"^(\d+)\.to_([kv])_ip\.weight$")


# --- reading the published files ------------------------------------------------------------------------------
def find_adapter(model: str | os.PathLike, kind: str) -> tuple[Path, Path]:
    """The weight file and image-encoder folder of an adapter given as its folder (or its weight file)."""
    path = Path(model).expanduser()
    if not path.exists() and not str(model).startswith((".", "/", "~")) and str(model).count("/") == 1:
        from ..loading import locate_model

        path = locate_model(str(model))  # a Hub id already in the local cache
    names = PLUS_FILES if kind == PLUS else FACE_ID_FILES
    if path.is_file():
        weights, folder = path, path.parent
    elif path.is_dir():
        found = [path / n for n in names if (path / n).is_file()]
        if not found:
            other = FACE_ID if kind == PLUS else PLUS
            if any((path / n).is_file() for n in (FACE_ID_FILES if kind == PLUS else PLUS_FILES)):
                raise KolorsError(f"{path} is a Kolors {NAMES[other]} folder, not {NAMES[kind]}: "
                                  f"use {'--face-id-model' if other == FACE_ID else '--ip-adapter-model'}")
            raise ModelLayoutError(f"{path} holds no {NAMES[kind]} weights ({' or '.join(names[:2])})")
        weights, folder = found[0], path
    else:
        raise ModelLayoutError(f"{NAMES[kind]} folder not found: {path}")
    for name in ENCODER_FOLDERS[kind]:
        if (folder / name / "config.json").is_file():
            return weights, folder / name
    raise ModelLayoutError(f"{folder} has no image encoder: expected {ENCODER_FOLDERS[kind][0]}/config.json "
                           "(CLIP ViT-L/14-336) beside the adapter weights")


def read_adapter_file(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """``{"image_proj": {...}, "ip_adapter": {...}}`` from a published ``.bin`` (nested) or ``.safetensors``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            flat = load_file(str(path))
            state: dict[str, Any] = {"image_proj": {}, "ip_adapter": {}}
            for key, value in flat.items():
                group, _, rest = key.partition(".")
                if group in state:
                    state[group][rest] = value
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelLayoutError(f"weight file not found: {path}") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise ModelLayoutError(f"weight file {path} is corrupt or not an IP-Adapter ({reason})") from None
    if isinstance(state, dict) and "adapter_modules" in state and "ip_adapter" not in state:
        state = {**state, "ip_adapter": state["adapter_modules"]}  # the FaceID-Plus file's name for the layers
    if not (isinstance(state, dict) and isinstance(state.get("image_proj"), dict)
            and isinstance(state.get("ip_adapter"), dict) and state["image_proj"] and state["ip_adapter"]):
        raise ModelLayoutError(f"{path} is not an IP-Adapter file: it lacks the image_proj and ip_adapter tensors")
    return {"image_proj": dict(state["image_proj"]), "ip_adapter": dict(state["ip_adapter"])}


def _kind_of(image_proj: dict[str, torch.Tensor]) -> str:
    if "perceiver_resampler.proj_in.weight" in image_proj:
        return FACE_ID
    if "latents" in image_proj and "proj_in.weight" in image_proj:
        return PLUS
    return "other"


def check_compatible(state: dict[str, dict[str, torch.Tensor]], kind: str, unet: Any, encoder_width: int,
                     name: str = "") -> None:
    """Raise a one-line KolorsError when the adapter ``state`` does not fit this UNet and image encoder."""
    where = f" ({name})" if name else ""
    found = _kind_of(state["image_proj"])
    if found != kind:
        what = {PLUS: "an IP-Adapter-Plus file", FACE_ID: "an IP-Adapter-FaceID-Plus file"}.get(
            found, "an IP-Adapter of another kind (neither Plus nor FaceID-Plus)")
        hint = {PLUS: ": use --ip-adapter-model", FACE_ID: ": use --face-id-model"}.get(found, "")
        raise KolorsError(f"this is {what}, not {NAMES[kind]}{hint}{where}")

    def differs(what: str, ours: Any, theirs: Any) -> KolorsError:
        return KolorsError(f"this {NAMES[kind]} is for a different base model: its {what} is {ours}, "
                           f"the base model's is {theirs}{where}")

    cfg = unet.config
    proj = state["image_proj"]
    if kind == PLUS:
        out_width = proj["proj_out.weight"].shape[0]
        if out_width != cfg.cross_attention_dim:
            raise differs("cross-attention width", out_width, cfg.cross_attention_dim)
        feature_width = proj["proj_in.weight"].shape[1]
    else:
        out_width = proj["norm.weight"].shape[0]
        text_width = cfg.encoder_hid_dim
        if out_width != text_width:
            raise differs("face-token width (the text embedding width)", out_width, text_width)
        feature_width = proj["perceiver_resampler.proj_in.weight"].shape[1]
    if feature_width != encoder_width:
        raise KolorsError(f"this {NAMES[kind]} reads {feature_width}-wide image features but its image encoder "
                          f"gives {encoder_width}-wide ones: the image encoder folder is the wrong one{where}")
    layers = _cross_attention_layers(unet)
    keys = {m.group(1) for k in state["ip_adapter"] if (m := _IP_KEY.match(k))}
    if len(keys) != len(layers):
        raise differs("number of cross-attention layers", len(keys), len(layers))
    for key_id, (_, hidden) in zip(range(1, 2 * len(layers), 2), layers):
        weight = state["ip_adapter"].get(f"{key_id}.to_k_ip.weight")
        if weight is None:
            raise differs("set of attention layers", f"missing {key_id}.to_k_ip", "different")
        if weight.shape[1] != cfg.cross_attention_dim:
            raise differs("cross-attention width", weight.shape[1], cfg.cross_attention_dim)
        if weight.shape[0] != hidden:
            raise differs(f"attention width in layer {key_id}", weight.shape[0], hidden)


def _cross_attention_layers(unet: Any) -> list[tuple[str, int]]:
    """(processor name, hidden width) of each cross-attention layer, in ``attn_processors`` order."""
    modules = dict(unet.named_modules())
    layers = []
    for name in unet.attn_processors:
        if name.endswith("attn1.processor") or "motion_modules" in name or name.startswith("encoder_hid_proj."):
            continue
        attn = modules[name[: -len(".processor")]]
        layers.append((name, attn.to_q.out_features))
    return layers


# --- the FaceID-Plus projection --------------------------------------------------------------------------------
class _PerceiverAttention(torch.nn.Module):
    """Latent queries attending to image features and themselves (published names norm1/norm2/to_q/to_kv/to_out)."""

    def __init__(self, dim: int, heads: int, dim_head: int = 64) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.norm1 = torch.nn.LayerNorm(dim)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.to_q = torch.nn.Linear(dim, inner, bias=False)
        self.to_kv = torch.nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = torch.nn.Linear(inner, dim, bias=False)

    def forward(self, features: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        features, latents = self.norm1(features), self.norm2(latents)
        b, n, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([features, latents], dim=1)).chunk(2, dim=-1)
        q, k, v = (t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class _Resampler(torch.nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, feature_dim: int, ff_mult: int = 4) -> None:
        super().__init__()
        self.proj_in = torch.nn.Linear(feature_dim, dim)
        self.proj_out = torch.nn.Linear(dim, dim)
        self.norm_out = torch.nn.LayerNorm(dim)
        self.layers = torch.nn.ModuleList(
            torch.nn.ModuleList([
                _PerceiverAttention(dim, heads),
                torch.nn.Sequential(torch.nn.LayerNorm(dim), torch.nn.Linear(dim, dim * ff_mult, bias=False),
                                    torch.nn.GELU(), torch.nn.Linear(dim * ff_mult, dim, bias=False)),
            ])
            for _ in range(depth)
        )

    def forward(self, latents: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        features = self.proj_in(features)
        for attn, ff in self.layers:
            latents = attn(features, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


class FaceIDPlusProjection(torch.nn.Module):
    """Face embedding (B, 512) + CLIP features (B, S, C) -> (B, num_tokens, width) face tokens.

    The embedding is expanded to ``num_tokens`` tokens, which then attend to the CLIP features of the face crop;
    the result is added to them (the published model's shortcut). Parameter names are those of the published file.
    """

    def __init__(self, id_dim: int, width: int, num_tokens: int, feature_dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.width, self.num_tokens = width, num_tokens
        self.proj = torch.nn.Sequential(torch.nn.Linear(id_dim, 2 * id_dim), torch.nn.GELU(),
                                        torch.nn.Linear(2 * id_dim, width * num_tokens))
        self.norm = torch.nn.LayerNorm(width)
        self.perceiver_resampler = _Resampler(width, depth, heads, feature_dim)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> FaceIDPlusProjection:
        """The projection the published ``image_proj`` tensors describe, with those weights."""
        width = state["norm.weight"].shape[0]
        depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("perceiver_resampler.layers."))
        module = cls(id_dim=state["proj.0.weight"].shape[1], width=width,
                     num_tokens=state["proj.2.weight"].shape[0] // width,
                     feature_dim=state["perceiver_resampler.proj_in.weight"].shape[1], depth=depth,
                     heads=state["perceiver_resampler.layers.0.0.to_q.weight"].shape[0] // 64)
        module.load_state_dict(state, strict=True)
        return module.eval().requires_grad_(False)

    @property
    def id_dim(self) -> int:
        return self.proj[0].in_features

    def forward(self, id_embeds: torch.Tensor, clip_features: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(self.proj(id_embeds).reshape(-1, self.num_tokens, self.width))
        return tokens + self.perceiver_resampler(tokens, clip_features)


class _ThroughTextProjection(torch.nn.Module):
    """The image-projection slot of FaceID-Plus inside the UNet: ready face tokens through its text projection."""

    def __init__(self, text_projection: torch.nn.Module) -> None:
        super().__init__()
        self._text_projection = [text_projection]  # a plain list: not a second copy in the state dict

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._text_projection[0](tokens)


# --- state of a pipeline ---------------------------------------------------------------------------------------
@dataclass
class ImagePromptAdapter:
    """One loaded image-prompt adapter and its current input."""

    kind: str  # PLUS or FACE_ID
    weights: Path
    encoder_folder: Path
    state: dict[str, dict[str, torch.Tensor]] = field(repr=False)
    encoder: Any = field(repr=False)  # CLIPVisionModelWithProjection
    scale: float
    image: Image.Image = field(repr=False)  # the reference image (PLUS) or the face crop (FACE_ID)
    image_path: str | None = None
    face_embedding: torch.Tensor | None = field(default=None, repr=False)  # (1, 512), FACE_ID
    face_path: str | None = None
    projection: FaceIDPlusProjection | None = field(default=None, repr=False)

    def parameters(self) -> dict[str, Any]:
        """The JSON-serialisable record of this adapter for the generation parameters."""
        known = self.weights.name in (PLUS_FILES if self.kind == PLUS else FACE_ID_FILES)
        params: dict[str, Any] = {"model": str(self.weights.parent if known else self.weights), "scale": self.scale}
        if self.kind == PLUS:
            params["image"] = self.image_path
        else:
            params["face"] = self.face_path
            if self.image_path is not None and self.image_path != self.face_path:
                params["image"] = self.image_path
        return params


@dataclass
class _State:
    adapters: dict[str, ImagePromptAdapter] = field(default_factory=dict)
    processors: dict[str, Any] | None = None  # the UNet's attention processors before any adapter
    text_projection: torch.nn.Module | None = None
    hid_dim_type: str | None = None


_STATES: weakref.WeakKeyDictionary[torch.nn.Module, _State] = weakref.WeakKeyDictionary()


def _unet(pipe: Any) -> Any:
    return pipe.components.unet


def _check_scale(scale: float) -> float:
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or not 0 <= scale <= 10:
        raise InvalidParameterError(f"an IP-Adapter scale must be a number between 0 and 10, got {scale}")
    return float(scale)


def _load_encoder(folder: Path, pipe: Any) -> Any:
    from transformers import CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    device = torch.device("cpu") if getattr(pipe, "offload", False) else pipe.device
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(folder, dtype=pipe.dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ModelLayoutError(f"cannot load the image encoder in {folder}: {reason}") from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    return encoder.to(device).eval().requires_grad_(False)


def _encoder_width(folder: Path) -> int:
    """The hidden width of the CLIP image encoder in ``folder`` (from its config.json)."""
    from ..loading.locate import read_json

    config = read_json(folder / "config.json")
    config = config.get("vision_config", config)  # a full CLIPModel config holds the vision part
    if "hidden_size" not in config:
        raise ModelLayoutError(f"{folder}/config.json does not describe a CLIP image encoder (no hidden_size)")
    return int(config["hidden_size"])


def _install(unet: Any, state: _State) -> None:
    """Put the attention processors and image projections of ``state.adapters`` into the UNet (or none)."""
    from diffusers.models.embeddings import MultiIPAdapterImageProjection

    if state.processors is None:  # first adapter: remember the UNet as it is
        state.processors = dict(unet.attn_processors)
        state.hid_dim_type = unet.config.encoder_hid_dim_type
        state.text_projection = unet.encoder_hid_proj
    adapters = list(state.adapters.values())
    if not adapters:
        if hasattr(unet, "text_encoder_hid_proj"):
            del unet.text_encoder_hid_proj
        unet.encoder_hid_proj = state.text_projection  # first: the image projections hold attention layers too
        unet.set_attn_processor(dict(state.processors))  # it empties the dict it is given
        unet.config.encoder_hid_dim_type = state.hid_dim_type
        state.processors = state.text_projection = state.hid_dim_type = None
        return
    if not hasattr(unet, "text_encoder_hid_proj"):  # keep the 4096->2048 text projection (diffusers' Kolors name)
        unet.text_encoder_hid_proj = state.text_projection
    unet.encoder_hid_proj = None
    unet.set_attn_processor(dict(state.processors))  # it empties the dict it is given
    # diffusers' conversion, with the state dicts in its format (FaceID-Plus layers read as such)
    state_dicts = [{"image_proj": a.state["image_proj"], "ip_adapter": a.state["ip_adapter"]} for a in adapters]
    processors = unet._convert_ip_adapter_attn_to_diffusers(state_dicts, low_cpu_mem_usage=False)
    unet.set_attn_processor(processors)
    layers = []
    for adapter in adapters:
        if adapter.kind == PLUS:
            layers.append(unet._convert_ip_adapter_image_proj_to_diffusers(adapter.state["image_proj"],
                                                                           low_cpu_mem_usage=False))
        else:
            layers.append(_ThroughTextProjection(state.text_projection))
    unet.encoder_hid_proj = MultiIPAdapterImageProjection(layers)
    unet.config.encoder_hid_dim_type = "ip_image_proj"
    where = {"device": state.text_projection.weight.device, "dtype": state.text_projection.weight.dtype}
    unet.encoder_hid_proj.to(**where).requires_grad_(False)
    for proc in unet.attn_processors.values():  # only the new layers move: the UNet may be quantized
        if isinstance(proc, torch.nn.Module):
            proc.to(**where).requires_grad_(False)
    _apply_scales(unet, state)


def _apply_scales(unet: Any, state: _State) -> None:
    from diffusers.models.attention_processor import IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0

    scales = [a.scale for a in state.adapters.values()]
    tokens = [a.state["image_proj"]["latents"].shape[1] if a.kind == PLUS else a.projection.num_tokens
              for a in state.adapters.values()]
    for proc in unet.attn_processors.values():
        if isinstance(proc, (IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0)):
            proc.scale = list(scales)
            proc.num_tokens = tokens


def _register(pipe: Any, adapter: ImagePromptAdapter) -> None:
    unet = _unet(pipe)
    if getattr(unet.config, "encoder_hid_dim_type", None) not in ("text_proj", "ip_image_proj"):
        raise KolorsError("IP-Adapters need a Kolors UNet (with its 4096->2048 text projection)")
    check_compatible(adapter.state, adapter.kind, unet, adapter.encoder.config.hidden_size, str(adapter.weights))
    state = _STATES.setdefault(unet, _State())
    previous = state.adapters.get(adapter.kind)
    state.adapters[adapter.kind] = adapter
    state.adapters = {k: state.adapters[k] for k in (PLUS, FACE_ID) if k in state.adapters}
    try:
        _install(unet, state)
    except Exception:  # put back what was loaded before
        if previous is None:
            state.adapters.pop(adapter.kind)
        else:
            state.adapters[adapter.kind] = previous
        _install(unet, state)
        if not state.adapters:
            _STATES.pop(unet, None)
        raise


# --- public API ------------------------------------------------------------------------------------------------
def load_ip_adapter(pipe: Any, model: str | os.PathLike, image: str | os.PathLike | Image.Image,
                    scale: float = DEFAULT_SCALES[PLUS]) -> ImagePromptAdapter:
    """Load Kolors-IP-Adapter-Plus (folder or weight file) into ``pipe`` with ``image`` as the reference.

    Replaces an IP-Adapter-Plus loaded before. Later generations of ``pipe`` use it until ``unload_ip_adapter``.
    """
    from ..pipelines.image_to_image import open_image

    scale = _check_scale(scale)
    picture = open_image(image)
    weights, encoder_folder = find_adapter(model, PLUS)
    state = read_adapter_file(weights)
    check_compatible(state, PLUS, _unet(pipe), _encoder_width(encoder_folder), str(weights))
    adapter = ImagePromptAdapter(
        kind=PLUS, weights=weights, encoder_folder=encoder_folder, state=state,
        encoder=_load_encoder(encoder_folder, pipe), scale=scale, image=picture,
        image_path=None if isinstance(image, Image.Image) else str(Path(image)),
    )
    _register(pipe, adapter)
    return adapter


def load_face_id(pipe: Any, model: str | os.PathLike, face: str | os.PathLike | Image.Image | np.ndarray | torch.Tensor,
                 scale: float = DEFAULT_SCALES[FACE_ID], *, image: str | os.PathLike | Image.Image | None = None,
                 insightface_root: str | os.PathLike | None = None) -> ImagePromptAdapter:
    """Load Kolors-IP-Adapter-FaceID-Plus into ``pipe`` for the face ``face``.

    ``face``: a photo (the largest face is found, embedded and cropped by insightface's antelopev2), or a 512-d
    face embedding (``.npy``/``.pt`` file, array or tensor) together with ``image``, the face crop whose CLIP
    features complete it. With a photo, ``image`` (if given) replaces the automatic crop.
    """
    from ..pipelines.image_to_image import open_image

    scale = _check_scale(scale)
    weights, encoder_folder = find_adapter(model, FACE_ID)
    embedding, crop, face_path = _face_inputs(face, image, insightface_root, weights.parent)
    state = read_adapter_file(weights)
    check_compatible(state, FACE_ID, _unet(pipe), _encoder_width(encoder_folder), str(weights))
    projection = FaceIDPlusProjection.from_state_dict(state["image_proj"])
    if embedding.numel() != projection.id_dim:
        raise KolorsError(f"the face embedding has {embedding.numel()} values, this FaceID-Plus adapter takes "
                          f"{projection.id_dim} (an insightface antelopev2 embedding)")
    picture = open_image(crop)
    image_path = face_path if image is None else (None if isinstance(image, Image.Image) else str(Path(image)))
    device = torch.device("cpu") if getattr(pipe, "offload", False) else pipe.device
    adapter = ImagePromptAdapter(
        kind=FACE_ID, weights=weights, encoder_folder=encoder_folder, state=state,
        encoder=_load_encoder(encoder_folder, pipe), scale=scale, image=picture, image_path=image_path,
        face_embedding=embedding.reshape(1, -1).float(), face_path=face_path,
        projection=projection.to(device, pipe.dtype),
    )
    _register(pipe, adapter)
    return adapter


def set_ip_adapter_scale(pipe: Any, scale: float, kind: str = PLUS) -> None:
    """Change the scale of a loaded adapter (``kind``: "ip_adapter" or "face_id"); 0 switches it off."""
    state = _STATES.get(_unet(pipe))
    if state is None or kind not in state.adapters:
        raise KolorsError(f"no {NAMES.get(kind, kind)} is loaded")
    state.adapters[kind].scale = _check_scale(scale)
    _apply_scales(_unet(pipe), state)


def loaded_ip_adapters(pipe: Any) -> list[ImagePromptAdapter]:
    """The image-prompt adapters loaded into ``pipe`` (IP-Adapter-Plus first)."""
    state = _STATES.get(_unet(pipe))
    return list(state.adapters.values()) if state else []


def unload_ip_adapter(pipe: Any, kind: str | None = None) -> None:
    """Remove the adapter ``kind`` (default: all); the UNet is then exactly as before loading."""
    unet = _unet(pipe)
    state = _STATES.get(unet)
    if state is None:
        return
    for k in [kind] if kind else list(state.adapters):
        state.adapters.pop(k, None)
    _install(unet, state)
    if not state.adapters:
        _STATES.pop(unet, None)


# --- inputs ----------------------------------------------------------------------------------------------------
def parse_image_spec(spec: str, default_scale: float) -> tuple[str, float]:
    """``IMAGE[:SCALE]`` (the CLI's ``--ip-adapter`` / ``--face-id``) as ``(image, scale)``."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", tail.strip()):
        return head, _check_scale(float(tail))
    return spec, default_scale


def read_face_embedding(path: str | os.PathLike) -> torch.Tensor:
    """A face embedding from a ``.npy`` or ``.pt`` file (any shape holding one vector)."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            data = torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(data, dict) and len(data) == 1:
                data = next(iter(data.values()))
            if isinstance(data, np.ndarray):
                data = torch.from_numpy(data)
    except FileNotFoundError:
        raise KolorsError(f"face embedding not found: {path}") from None
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise KolorsError(f"cannot read the face embedding {path}: {reason}") from None
    if not isinstance(data, torch.Tensor) or not data.is_floating_point() or data.numel() == 0:
        raise KolorsError(f"{path} does not hold a face embedding (a float vector)")
    if data.squeeze().ndim != 1:
        raise KolorsError(f"{path} holds a {tuple(data.shape)} array: expected one face embedding vector")
    return data.float().reshape(-1)


def _face_inputs(face: Any, image: Any, root: Any, adapter_folder: Path) -> tuple[torch.Tensor, Any, str | None]:
    """(embedding, face-crop image, recorded face path) from a photo or an embedding (+ image)."""
    if isinstance(face, (np.ndarray, torch.Tensor)):
        if image is None:
            raise KolorsError("a face embedding needs the face image too (image=... / --face-image)")
        return torch.as_tensor(np.asarray(face) if isinstance(face, np.ndarray) else face).float().reshape(-1), \
            image, None
    if not isinstance(face, Image.Image) and Path(face).suffix.lower() in EMBEDDING_SUFFIXES:
        embedding = read_face_embedding(face)
        if image is None:
            raise KolorsError(f"the face embedding {face} needs the face image too: --face-image IMAGE")
        return embedding, image, str(Path(face))
    from ..pipelines.image_to_image import open_image

    photo = open_image(face)
    embedding, crop = detect_face(photo, root, adapter_folder)
    return embedding, (crop if image is None else image), None if isinstance(face, Image.Image) else str(Path(face))


def _antelopev2_root(root: Any, adapter_folder: Path) -> tuple[Path, list[str]]:
    """The insightface root holding models/antelopev2 and the model files missing there."""
    candidates = [Path(root).expanduser()] if root else [adapter_folder, Path("~/.insightface").expanduser()]
    best: tuple[Path, list[str]] | None = None
    for candidate in candidates:
        missing = [f for f in ANTELOPEV2_FILES if not (candidate / "models" / "antelopev2" / f).is_file()]
        if not missing:
            return candidate, []
        if best is None:
            best = (candidate, missing)
    assert best is not None
    return best


def detect_face(photo: Image.Image, root: Any = None,
                adapter_folder: Path = Path(".")) -> tuple[torch.Tensor, Image.Image]:
    """The largest face's antelopev2 embedding and its square crop (the official FaceID-Plus preparation)."""
    try:
        from insightface.app import FaceAnalysis
    except ImportError:
        raise KolorsError("a face photo needs insightface (pip install insightface onnxruntime) and its antelopev2 "
                          "models; or give a 512-d face embedding (.npy/.pt) with --face-image") from None
    found_root, missing = _antelopev2_root(root, adapter_folder)
    if missing:
        raise KolorsError(f"insightface's antelopev2 models are missing from {found_root}/models/antelopev2: "
                          f"{', '.join(missing)}")
    app = FaceAnalysis(name="antelopev2", root=str(found_root), providers=["CPUExecutionProvider"])
    app.prepare(ctx_id=0, det_size=(640, 640))
    faces = app.get(np.asarray(photo)[:, :, ::-1].copy())  # insightface reads BGR
    if not faces:
        raise KolorsError("no face found in the face image: use a clearer photo, or give an embedding")
    face = max(faces, key=lambda f: (f["bbox"][2] - f["bbox"][0]) * (f["bbox"][3] - f["bbox"][1]))
    left, top, right, bottom = (float(v) for v in face["bbox"])
    half = max(right - left, bottom - top) / 2
    cx, cy = (left + right) / 2, (top + bottom) / 2
    crop = photo.crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half)))
    return torch.as_tensor(np.asarray(face["embedding"], dtype=np.float32)), crop


# --- generation ------------------------------------------------------------------------------------------------
class ImagePromptConditioner(Conditioner):
    """Passes each adapter's image tokens to the UNet (``added_cond_kwargs["image_embeds"]``).

    ``embeds``: per adapter, (negative, positive) tensors of shape (1, 1, tokens, width). Rows follow the loop's
    batch order: ``[negative…, positive…]`` with guidance, positive only without.
    """

    def __init__(self, embeds: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.embeds = embeds
        self._n = 1

    def begin(self, scheduler: Any, generators: list[torch.Generator], latents: torch.Tensor,
              timesteps: torch.Tensor) -> None:
        self._n = len(generators)

    def unet_kwargs(self, model_in: torch.Tensor, t: torch.Tensor, progress: float, context: torch.Tensor,
                    added: dict[str, torch.Tensor]) -> dict[str, Any]:
        n, rows = self._n, model_in.shape[0]
        out = []
        for negative, positive in self.embeds:
            parts = [negative.expand(n, *negative.shape[1:])] if rows == 2 * n else []
            parts.append(positive.expand(n, *positive.shape[1:]))
            out.append(torch.cat(parts).to(model_in.device))
        return {"added_cond_kwargs": {"image_embeds": out}}


def _clip_pixels(adapter: ImagePromptAdapter) -> torch.Tensor:
    from transformers import CLIPImageProcessor

    size = adapter.encoder.config.image_size
    processor = CLIPImageProcessor(size=size, crop_size=size)  # as diffusers and the official scripts build it
    return processor(adapter.image, return_tensors="pt").pixel_values


@torch.no_grad()
def _embeds(pipe: Any, adapter: ImagePromptAdapter) -> tuple[torch.Tensor, torch.Tensor]:
    encoder = adapter.encoder
    dtype = next(encoder.parameters()).dtype
    with pipe._on_device(encoder):
        pixels = _clip_pixels(adapter).to(pipe.device, dtype)
        positive = encoder(pixels, output_hidden_states=True).hidden_states[-2]
        if adapter.kind == PLUS:
            negative = encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
    if adapter.kind == PLUS:
        return negative[None], positive[None]
    features = positive
    proj = adapter.projection
    with pipe._on_device(proj):
        face = adapter.face_embedding.to(pipe.device, pipe.dtype)
        positive = proj(face, features)
        negative = proj(torch.zeros_like(face), torch.zeros_like(features))  # the official negative
    return negative[None], positive[None]


def image_prompt_conditioners(pipe: Any) -> tuple[list[Conditioner], dict[str, Any]]:
    """The conditioner for the adapters loaded into ``pipe`` and their parameter records (nothing without)."""
    state = _STATES.get(_unet(pipe))
    if not state or not state.adapters:
        return [], {}
    _apply_scales(_unet(pipe), state)
    embeds = [_embeds(pipe, a) for a in state.adapters.values()]
    return [ImagePromptConditioner(embeds)], {a.kind: a.parameters() for a in state.adapters.values()}
