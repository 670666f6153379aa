"""Image prompts owned by a pipeline: IP-Adapter-Plus and FaceID-Plus installed for the requests that name them.

```python
request = GenerationRequest("一位穿红衣服的女士", ip_adapter=ImagePrompt("Kolors-IP-Adapter-Plus", "ref.png", 0.5),
                            face_id=FaceId("Kolors-IP-Adapter-FaceID-Plus", "emb.npy", image="crop.png"))
pipe.generate(request)
```

An :class:`ImagePromptSet` reads each adapter's weights and image encoder once (a bounded number are kept), puts
diffusers' IP-Adapter attention processors and image projections into the UNet for a request's generation, and
takes them out afterwards, so the UNet is exactly itself again. The UNet's 4096→2048 text projection is kept as
``text_encoder_hid_proj`` (diffusers' Kolors name) while adapters are in; FaceID-Plus face tokens go through it.

The older way, ``load_ip_adapter(pipe, DIR, image, scale)`` / ``load_face_id(pipe, DIR, face, ...)``, *attaches*
an adapter: it stays in the UNet and applies to every request that names no image prompt of its own, until
``unload_ip_adapter(pipe)``.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..diffusion.conditioning import Conditioner
from ..errors import KolorsError
from ..images import open_image
from ..request import FaceId, GenerationRequest, ImagePrompt
from .ip_adapter import (
    DEFAULT_SCALES,
    FACE_ID,
    FACE_ID_FILES,
    NAMES,
    PLUS,
    PLUS_FILES,
    FaceIDPlusProjection,
    _ThroughTextProjection,
    check_compatible,
    check_scale,
    encoder_width,
    face_inputs,
    find_adapter,
    load_encoder,
    read_adapter_file,
)

MAX_LOADED = 2  # adapter weights + image encoders kept loaded for requests


@dataclass
class AdapterWeights:
    """An adapter's published weights and its image encoder, loaded."""

    kind: str  # PLUS or FACE_ID
    weights: Path
    encoder_folder: Path
    state: dict[str, dict[str, torch.Tensor]] = field(repr=False)
    encoder: Any = field(repr=False)  # CLIPVisionModelWithProjection
    projection: FaceIDPlusProjection | None = field(default=None, repr=False)  # FACE_ID

    @property
    def num_tokens(self) -> int:
        return self.state["image_proj"]["latents"].shape[1] if self.kind == PLUS else self.projection.num_tokens


@dataclass
class ImagePromptAdapter:
    """One image-prompt adapter with its input: what a generation needs from it."""

    kind: str
    loaded: AdapterWeights = field(repr=False)
    scale: float
    image: Image.Image = field(repr=False)  # the reference image (PLUS) or the face crop (FACE_ID)
    image_path: str | None = None
    face_embedding: torch.Tensor | None = field(default=None, repr=False)  # (1, 512), FACE_ID
    face_path: str | None = None

    @property
    def weights(self) -> Path:
        return self.loaded.weights

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


class ImagePromptSet:
    """The image-prompt adapters of one pipeline: loaded weights, attached adapters, what is in the UNet."""

    def __init__(self, pipe: Any, max_loaded: int = MAX_LOADED) -> None:
        self._pipe = pipe  # the owning pipeline: its UNet, device, dtype and placement
        self.max_loaded = max_loaded
        self._weights: OrderedDict[tuple[str, Path], AdapterWeights] = OrderedDict()
        self._attached: dict[str, ImagePromptAdapter] = {}
        self._installed: list[ImagePromptAdapter] = []
        self._original: tuple[dict[str, Any], Any, str] | None = None  # processors, text projection, config type

    @property
    def _unet(self) -> Any:
        return self._pipe.components.unet

    # --- requests ---------------------------------------------------------------------------------------------
    def prepare(self, kind: str, spec: ImagePrompt | FaceId) -> ImagePromptAdapter:
        """The adapter a request's ``ip_adapter`` / ``face_id`` entry describes, its weights loaded once."""
        scale = check_scale(spec.scale)
        loaded = self._load(kind, spec.model)
        if kind == PLUS:
            picture = open_image(spec.image, "image")
            path = spec.image if isinstance(spec.image, (str, os.PathLike)) else None
            return ImagePromptAdapter(PLUS, loaded, scale, picture, None if path is None else str(Path(path)))
        embedding, crop, face_path = face_inputs(spec.face, spec.image, None, loaded.weights.parent)
        if embedding.numel() != loaded.projection.id_dim:
            raise KolorsError(f"the face embedding has {embedding.numel()} values, this FaceID-Plus adapter takes "
                              f"{loaded.projection.id_dim} (an insightface antelopev2 embedding)")
        image_path = face_path if spec.image is None else (
            str(Path(spec.image)) if isinstance(spec.image, (str, os.PathLike)) else None)
        return ImagePromptAdapter(FACE_ID, loaded, scale, open_image(crop, "face image"), image_path,
                                  embedding.reshape(1, -1).float(), face_path)

    def adapters_for(self, request: GenerationRequest) -> list[ImagePromptAdapter]:
        """The adapters a generation of ``request`` uses: its own, else the attached ones (Plus first)."""
        if request.ip_adapter is None and request.face_id is None:
            return list(self._attached.values())
        wanted = [(PLUS, request.ip_adapter), (FACE_ID, request.face_id)]
        return [self.prepare(kind, spec) for kind, spec in wanted if spec is not None]

    @contextlib.contextmanager
    def applied(self, request: GenerationRequest) -> Iterator[list[Conditioner]]:
        """Inside this block the UNet holds exactly the adapters of ``request``; yields their conditioner."""
        adapters = self.adapters_for(request)
        previous = list(self._installed)
        self._install(adapters)
        try:
            yield [ImagePromptConditioner([self._embeds(a) for a in adapters])] if adapters else []
        finally:
            self._install(previous)

    def records(self, request: GenerationRequest) -> dict[str, Any]:
        """The ``ip_adapter`` / ``face_id`` entries of an image's parameters for the attached adapters (a
        request's own ones are in the request)."""
        if request.ip_adapter is not None or request.face_id is not None:
            return {}
        return {kind: adapter.parameters() for kind, adapter in self._attached.items()}

    # --- attached adapters (the older API) ----------------------------------------------------------------------
    def attach(self, adapter: ImagePromptAdapter) -> ImagePromptAdapter:
        """Keep ``adapter`` in the UNet for every request that names no image prompt (replaces one of its kind)."""
        attached = {**self._attached, adapter.kind: adapter}
        self._install([attached[k] for k in (PLUS, FACE_ID) if k in attached])
        self._attached = {k: attached[k] for k in (PLUS, FACE_ID) if k in attached}
        return adapter

    def detach(self, kind: str | None = None) -> None:
        for k in [kind] if kind else list(self._attached):
            self._attached.pop(k, None)
        self._install(list(self._attached.values()))

    def set_scale(self, kind: str, scale: float) -> None:
        if kind not in self._attached:
            raise KolorsError(f"no {NAMES.get(kind, kind)} is loaded")
        self._attached[kind].scale = check_scale(scale)
        self._apply_scales()

    def attached(self) -> list[ImagePromptAdapter]:
        return list(self._attached.values())

    # --- weights ------------------------------------------------------------------------------------------------
    def _load(self, kind: str, model: str | os.PathLike) -> AdapterWeights:
        weights, encoder_folder = find_adapter(model, kind)
        key = (kind, weights.resolve())
        if key in self._weights:
            self._weights.move_to_end(key)
            return self._weights[key]
        unet = self._unet
        if getattr(unet.config, "encoder_hid_dim_type", None) not in ("text_proj", "ip_image_proj"):
            raise KolorsError("IP-Adapters need a Kolors UNet (with its 4096->2048 text projection)")
        state = read_adapter_file(weights)
        check_compatible(state, kind, unet, encoder_width(encoder_folder), str(weights))
        pipe = self._pipe
        projection = None
        if kind == FACE_ID:
            projection = FaceIDPlusProjection.from_state_dict(state["image_proj"]).to(pipe.placement.storage,
                                                                                       pipe.dtype)
        loaded = AdapterWeights(kind, weights, encoder_folder, state,
                                load_encoder(encoder_folder, pipe.placement.storage, pipe.dtype), projection)
        self._weights[key] = loaded
        in_use = {a.loaded.weights.resolve() for a in [*self._attached.values(), *self._installed]}
        for old in [k for k in self._weights if k[1] not in in_use and k != key][: max(0, len(self._weights)
                                                                                     - self.max_loaded)]:
            del self._weights[old]
        return loaded

    # --- the UNet -------------------------------------------------------------------------------------------------
    def _install(self, adapters: list[ImagePromptAdapter]) -> None:
        """Put the attention processors and image projections of ``adapters`` into the UNet (none: as it was)."""
        from diffusers.models.embeddings import MultiIPAdapterImageProjection

        unet = self._unet
        key = [(a.kind, a.loaded.weights) for a in adapters]
        if key == [(a.kind, a.loaded.weights) for a in self._installed] and (adapters or self._original is None):
            self._installed = list(adapters)
            self._apply_scales()
            return
        if self._original is None:  # first adapter: remember the UNet as it is
            self._original = (dict(unet.attn_processors), unet.encoder_hid_proj, unet.config.encoder_hid_dim_type)
        processors, text_projection, hid_dim_type = self._original
        if not adapters:
            if hasattr(unet, "text_encoder_hid_proj"):
                del unet.text_encoder_hid_proj
            unet.encoder_hid_proj = text_projection  # first: the image projections hold attention layers too
            unet.set_attn_processor(dict(processors))  # it empties the dict it is given
            unet.config.encoder_hid_dim_type = hid_dim_type
            self._original, self._installed = None, []
            return
        if not hasattr(unet, "text_encoder_hid_proj"):  # keep the 4096->2048 text projection (diffusers' name)
            unet.text_encoder_hid_proj = text_projection
        unet.encoder_hid_proj = None
        unet.set_attn_processor(dict(processors))
        # diffusers' conversion, with the state dicts in its format (FaceID-Plus layers read as such)
        state_dicts = [{"image_proj": a.loaded.state["image_proj"], "ip_adapter": a.loaded.state["ip_adapter"]}
                       for a in adapters]
        unet.set_attn_processor(unet._convert_ip_adapter_attn_to_diffusers(state_dicts, low_cpu_mem_usage=False))
        layers = [unet._convert_ip_adapter_image_proj_to_diffusers(a.loaded.state["image_proj"],
                                                                   low_cpu_mem_usage=False)
                  if a.kind == PLUS else _ThroughTextProjection(text_projection) for a in adapters]
        unet.encoder_hid_proj = MultiIPAdapterImageProjection(layers)
        unet.config.encoder_hid_dim_type = "ip_image_proj"
        where = {"device": text_projection.weight.device, "dtype": text_projection.weight.dtype}
        unet.encoder_hid_proj.to(**where).requires_grad_(False)
        for proc in unet.attn_processors.values():  # only the new layers move: the UNet may be quantized
            if isinstance(proc, torch.nn.Module):
                proc.to(**where).requires_grad_(False)
        self._installed = list(adapters)
        self._apply_scales()

    def _apply_scales(self) -> None:
        from diffusers.models.attention_processor import IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0

        scales = [a.scale for a in self._installed]
        tokens = [a.loaded.num_tokens for a in self._installed]
        for proc in self._unet.attn_processors.values():
            if isinstance(proc, (IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0)):
                proc.scale = list(scales)
                proc.num_tokens = tokens

    @torch.no_grad()
    def _embeds(self, adapter: ImagePromptAdapter) -> tuple[torch.Tensor, torch.Tensor]:
        """(negative, positive) image tokens of ``adapter``'s input, each (1, 1, tokens, width)."""
        pipe = self._pipe
        encoder = adapter.loaded.encoder
        dtype = next(encoder.parameters()).dtype
        with pipe.placement.using(encoder):
            pixels = _clip_pixels(encoder, adapter.image).to(pipe.device, dtype)
            positive = encoder(pixels, output_hidden_states=True).hidden_states[-2]
            if adapter.kind == PLUS:
                negative = encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
        if adapter.kind == PLUS:
            return negative[None], positive[None]
        features = positive
        proj = adapter.loaded.projection
        with pipe.placement.using(proj):
            face = adapter.face_embedding.to(pipe.device, pipe.dtype)
            positive = proj(face, features)
            negative = proj(torch.zeros_like(face), torch.zeros_like(features))  # the official negative
        return negative[None], positive[None]


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


def _clip_pixels(encoder: Any, image: Image.Image) -> torch.Tensor:
    from transformers import CLIPImageProcessor

    size = encoder.config.image_size
    processor = CLIPImageProcessor(size=size, crop_size=size)  # as diffusers and the official scripts build it
    return processor(image, return_tensors="pt").pixel_values


# --- the older functional API --------------------------------------------------------------------------------------
def load_ip_adapter(pipe: Any, model: str | os.PathLike, image: str | os.PathLike | Image.Image,
                    scale: float = DEFAULT_SCALES[PLUS]) -> ImagePromptAdapter:
    """Attach Kolors-IP-Adapter-Plus (folder or weight file) to ``pipe`` with ``image`` as the reference.

    Replaces an IP-Adapter-Plus attached before. Requests that name no image prompt use it until
    ``unload_ip_adapter``.
    """
    check_scale(scale)
    open_image(image, "image")  # the image is checked before the weights are read
    adapter = pipe.image_prompts.prepare(PLUS, ImagePrompt(str(model), image, scale))
    return pipe.image_prompts.attach(adapter)


def load_face_id(pipe: Any, model: str | os.PathLike, face: str | os.PathLike | Image.Image | np.ndarray | torch.Tensor,
                 scale: float = DEFAULT_SCALES[FACE_ID], *, image: str | os.PathLike | Image.Image | None = None,
                 insightface_root: str | os.PathLike | None = None) -> ImagePromptAdapter:
    """Attach Kolors-IP-Adapter-FaceID-Plus to ``pipe`` for the face ``face``.

    ``face``: a photo (the largest face is found, embedded and cropped by insightface's antelopev2), or a 512-d
    face embedding (``.npy``/``.pt`` file, array or tensor) together with ``image``, the face crop whose CLIP
    features complete it. With a photo, ``image`` (if given) replaces the automatic crop.
    """
    check_scale(scale)
    weights, _ = find_adapter(model, FACE_ID)
    embedding, crop, face_path = face_inputs(face, image, insightface_root, weights.parent)
    spec = FaceId(str(model), embedding, crop, scale)
    adapter = pipe.image_prompts.prepare(FACE_ID, spec)
    adapter.face_path = face_path
    adapter.image_path = face_path if image is None else (
        None if isinstance(image, Image.Image) else str(Path(image)))
    return pipe.image_prompts.attach(adapter)


def set_ip_adapter_scale(pipe: Any, scale: float, kind: str = PLUS) -> None:
    """Change the scale of an attached adapter (``kind``: "ip_adapter" or "face_id"); 0 switches it off."""
    pipe.image_prompts.set_scale(kind, scale)


def loaded_ip_adapters(pipe: Any) -> list[ImagePromptAdapter]:
    """The image-prompt adapters attached to ``pipe`` (IP-Adapter-Plus first)."""
    return pipe.image_prompts.attached()


def unload_ip_adapter(pipe: Any, kind: str | None = None) -> None:
    """Detach the adapter ``kind`` (default: all); the UNet is then exactly as before loading."""
    pipe.image_prompts.detach(kind)
