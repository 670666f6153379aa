"""Kolors-IP-Adapter-Plus (a reference image) and Kolors-IP-Adapter-FaceID-Plus (a face): their published files,
the FaceID-Plus projection, and the face inputs. How a pipeline uses them: :mod:`kolors.adapters.image_prompts`.

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
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..defaults import FACE_ID_SCALE, IP_ADAPTER_SCALE
from ..errors import InvalidParameterError, KolorsError, ModelLayoutError
from ..images import open_image

PLUS = "ip_adapter"
FACE_ID = "face_id"
DEFAULT_SCALES = {PLUS: IP_ADAPTER_SCALE, FACE_ID: FACE_ID_SCALE}  # the official scripts' scales
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


# --- inputs ----------------------------------------------------------------------------------------------------
def parse_image_spec(spec: str, default_scale: float) -> tuple[str, float]:
    """``IMAGE[:SCALE]`` (the CLI's ``--ip-adapter`` / ``--face-id``) as ``(image, scale)``."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", tail.strip()):
        return head, check_scale(float(tail))
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


def face_inputs(face: Any, image: Any, root: Any, adapter_folder: Path) -> tuple[torch.Tensor, Any, str | None]:
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
    photo = open_image(face, "face image")
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




# --- checks and the image encoder -----------------------------------------------------------------------------
def check_scale(scale: float) -> float:
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or not 0 <= scale <= 10:
        raise InvalidParameterError(f"an IP-Adapter scale must be a number between 0 and 10, got {scale}")
    return float(scale)


def load_encoder(folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    """The CLIP image encoder in ``folder`` (CLIPVisionModelWithProjection), frozen."""
    from transformers import CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(folder, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ModelLayoutError(f"cannot load the image encoder in {folder}: {reason}") from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    return encoder.to(device).eval().requires_grad_(False)


def encoder_width(folder: Path) -> int:
    """The hidden width of the CLIP image encoder in ``folder`` (from its config.json)."""
    from ..loading.locate import read_json

    config = read_json(folder / "config.json")
    config = config.get("vision_config", config)  # a full CLIPModel config holds the vision part
    if "hidden_size" not in config:
        raise ModelLayoutError(f"{folder}/config.json does not describe a CLIP image encoder (no hidden_size)")
    return int(config["hidden_size"])
