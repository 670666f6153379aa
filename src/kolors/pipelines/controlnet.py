"""Generation guided by Kolors ControlNets (canny edges, depth, pose), from noise or from an init image.

```python
pipe = ControlNetPipeline.from_pretrained("Kolors", controlnets={"canny": "Kolors-ControlNet-Canny"})
result = pipe("一只白色小狗", controls=[Control("canny", "dog.png")])            # edges of dog.png
result = pipe("一只白色小狗", controls=[Control("depth", "depth.png", scale=0.5)],  # a ready depth map
              image="dog.png", strength=0.8)                                      # image-to-image
```

Without ``image`` the output has the first control image's size (unless ``width``/``height`` are given);
control images are resized to the output size. Defaults follow the official Kolors ControlNet scripts:
scale 0.7, guidance window [0, 0.9), guidance 6.0.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from ..adapters.controlnet import (
    DEFAULT_END,
    DEFAULT_SCALE,
    DEFAULT_START,
    ControlNetConditioner,
    controlnet_folder,
    load_controlnet,
)
from ..adapters.preprocess import CANNY_THRESHOLDS, control_map
from ..errors import InvalidParameterError, KolorsError
from .image_to_image import Image2ImagePipeline, open_image
from .pag import pag_settings
from .text_to_image import GenerationResult, _friendly_oom

DEFAULT_GUIDANCE = 6.0  # the official ControlNet scripts' guidance scale
DEFAULT_STRENGTH = 0.8  # diffusers' SDXL ControlNet image-to-image default


@dataclass(frozen=True)
class Control:
    """One ControlNet input.

    type: "canny", "depth", "pose" (or any name given to ``ControlNetPipeline.add_controlnet``).
    image: a path or PIL image: a photo for canny (edges are computed), a ready map for depth/pose (or a photo
        with ``detect=True``: the pipeline's ``annotator_dir`` then runs MiDaS / DWPose on it).
    scale: how strongly the ControlNet steers (0 turns it off).
    start, end: the fraction of the denoising steps in which it acts: step i of n when start <= i/n, (i+1)/n <= end.
    controlnet: a ControlNet folder for this control (default: the one loaded for ``type``).
    detect: whether ``image`` is turned into a map first (default: True for canny, False otherwise).
    thresholds: canny low/high thresholds.
    """

    type: str
    image: str | os.PathLike | Image.Image
    scale: float = DEFAULT_SCALE
    start: float = DEFAULT_START
    end: float = DEFAULT_END
    controlnet: str | os.PathLike | None = None
    detect: bool | None = None
    thresholds: tuple[int, int] = CANNY_THRESHOLDS

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Control:
        """A control from its parameters dict (what ``GenerationResult.parameters`` stores)."""
        known = {"type", "image", "scale", "start", "end", "controlnet", "detect", "thresholds"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidParameterError(f"unknown control setting '{unknown[0]}': use {', '.join(sorted(known))}")
        if data.get("image") is None:
            raise InvalidParameterError("a control needs an image (its path was not recorded)")
        values = dict(data)
        if "thresholds" in values:
            values["thresholds"] = tuple(values["thresholds"])
        return cls(**values)

    def validate(self) -> None:
        if not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale) or self.scale < 0:
            raise InvalidParameterError(f"control scale must be a number >= 0, got {self.scale}")
        if not 0.0 <= self.start < self.end <= 1.0:
            raise InvalidParameterError(
                f"control start/end must satisfy 0 <= start < end <= 1, got {self.start}/{self.end}"
            )

    def parameters(self, controlnet: Path | None) -> dict[str, Any]:
        """The JSON-serialisable settings of this control (the image as a path, None for an in-memory image)."""
        params: dict[str, Any] = {
            "type": self.type,
            "image": None if isinstance(self.image, Image.Image) else str(Path(self.image)),
            "scale": self.scale, "start": self.start, "end": self.end,
        }
        if controlnet is not None:
            params["controlnet"] = str(controlnet)
        if self.detect is not None:
            params["detect"] = self.detect
        if self.type == "canny" and tuple(self.thresholds) != CANNY_THRESHOLDS:
            params["thresholds"] = list(self.thresholds)
        return params


@dataclass
class PreparedControls:
    """A call's controls with their ControlNets (and folders, None for models given as objects) and maps."""

    controls: list[Control]
    models: list[ControlNetModel]
    folders: list[Path | None]
    maps: list[Image.Image]

    def parameters(self) -> list[dict[str, Any]]:
        """The ``controls`` entry of the generation parameters."""
        return [c.parameters(folder) for c, folder in zip(self.controls, self.folders)]


class ControlNets:
    """ControlNet support for a pipeline class (``class P(ControlNets, Image2ImagePipeline)``): the ControlNets
    loaded by type, control maps, the conditioners that add their residuals, and offloading while denoising.
    :class:`ControlNetPipeline` (text/image-to-image) and ``InpaintPipeline`` use it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.controlnets: dict[str, ControlNetModel] = {}
        self.controlnet_folders: dict[str, Path] = {}
        self._by_folder: dict[Path, ControlNetModel] = {}
        self.annotator_dir: Path | None = None

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        model: str | os.PathLike | None = None,
        *,
        controlnets: Mapping[str, str | os.PathLike] | None = None,
        annotator_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> Any:
        """Load a Kolors model (see ``Text2ImagePipeline.from_pretrained``) and the ControlNets named by type,
        e.g. ``controlnets={"canny": "Kolors-ControlNet-Canny"}``. ``annotator_dir`` holds the depth/pose
        annotator weights, if any."""
        pipe = super().from_pretrained(model, **kwargs)  # type: ignore[misc]
        pipe.annotator_dir = Path(annotator_dir) if annotator_dir is not None else None
        for kind, folder in (controlnets or {}).items():
            pipe.add_controlnet(kind, folder)
        return pipe

    def add_controlnet(self, kind: str, controlnet: str | os.PathLike | ControlNetModel) -> ControlNetModel:
        """Use ``controlnet`` (a folder, Hub id in the local cache, or a loaded model) for controls of ``kind``."""
        if isinstance(controlnet, ControlNetModel):
            self.controlnets[kind] = controlnet
            self.controlnet_folders.pop(kind, None)
            return controlnet
        folder = controlnet_folder(controlnet)
        self.controlnets[kind] = self._load_controlnet(folder)
        self.controlnet_folders[kind] = folder
        return self.controlnets[kind]

    def _load_controlnet(self, folder: Path) -> ControlNetModel:
        key = folder.resolve()
        if key not in self._by_folder:
            device = torch.device("cpu") if self.offload else self.device
            with _friendly_oom("loading the ControlNet"):
                self._by_folder[key] = load_controlnet(folder, device, self.dtype, unet=self.components.unet,
                                                       vae_scale_factor=self.vae_scale_factor)
        return self._by_folder[key]

    def _controlnet_for(self, control: Control) -> tuple[ControlNetModel, Path | None]:
        if control.controlnet is not None:
            folder = controlnet_folder(control.controlnet)
            return self._load_controlnet(folder), folder
        if control.type not in self.controlnets:
            raise KolorsError(
                f"no ControlNet is loaded for '{control.type}' controls: load one with "
                f"controlnets={{'{control.type}': 'Kolors-ControlNet-...'}} or give Control(..., controlnet=DIR)"
            )
        return self.controlnets[control.type], self.controlnet_folders.get(control.type)

    def _prepare_controls(self, controls: Sequence[Control | Mapping[str, Any]]) -> PreparedControls:
        """The controls checked, their ControlNets loaded and their control maps made (before any denoising)."""
        checked = [c if isinstance(c, Control) else Control.from_dict(c) for c in controls]
        for control in checked:
            control.validate()
        models = [self._controlnet_for(c) for c in checked]
        maps = [control_map(c.type, open_image(c.image), detect=c.detect, thresholds=tuple(c.thresholds),
                            annotator_dir=self.annotator_dir) for c in checked]
        return PreparedControls(checked, [m for m, _ in models], [f for _, f in models], maps)

    def _control_conditioners(self, prepared: PreparedControls, width: int, height: int
                              ) -> list[ControlNetConditioner]:
        """One conditioner per control, its map resized to the output size, in [0, 1] (diffusers' control-image
        processing)."""
        processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor, do_convert_rgb=True,
                                      do_normalize=False)
        return [ControlNetConditioner(model, processor.preprocess(m, height=height, width=width),
                                      scale=c.scale, start=c.start, end=c.end)
                for c, model, m in zip(prepared.controls, prepared.models, prepared.maps)]

    def _denoise(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The shared loop, with this call's ControlNets on the compute device while it runs (for offload)."""
        conditioners = inspect.signature(super()._denoise).bind(*args, **kwargs).arguments.get("conditioners", ())
        nets = dict.fromkeys(h.controlnet for h in conditioners if isinstance(h, ControlNetConditioner))
        with contextlib.ExitStack() as stack:
            for net in nets:
                stack.enter_context(self._on_device(net))
            return super()._denoise(*args, **kwargs)


class ControlNetPipeline(ControlNets, Image2ImagePipeline):
    """A loaded Kolors model plus ControlNets; each call takes ``controls`` and, optionally, an init image."""

    def __call__(  # type: ignore[override]
        self,
        prompt: str,
        negative_prompt: str | None = None,
        *,
        controls: Sequence[Control | Mapping[str, Any]],
        image: str | os.PathLike | Image.Image | None = None,
        strength: float = DEFAULT_STRENGTH,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
        num_images: int = 1,
        scheduler: str | None = None,
        batch_size: int | None = None,
        original_size: tuple[int, int] | None = None,
        target_size: tuple[int, int] | None = None,
        crop_coords: tuple[int, int] = (0, 0),
        pag_scale: float = 0.0,
        pag_layers: str | Sequence[str] | None = None,
        progress: bool | None = None,
    ) -> GenerationResult:
        """Generate with every control in ``controls`` steering (their residuals add).

        Without ``image``: from noise, at the first control image's size unless ``width``/``height`` are given.
        With ``image``: image-to-image from it with ``strength`` (its size unless ``width``/``height`` are given).
        ``guidance`` defaults to 6.0 when there are controls (the official scripts' value).
        """
        prepared = self._prepare_controls(controls)
        if guidance is None and prepared.controls:
            guidance = DEFAULT_GUIDANCE
        extra: dict[str, Any] = {"controls": prepared.parameters()}

        if image is None:
            maps = prepared.maps
            size_from = (maps[0].width, maps[0].height) if maps else (self.defaults.width, self.defaults.height)
            width = max(8, size_from[0] // 8 * 8) if width is None else width
            height = max(8, size_from[1] // 8 * 8) if height is None else height
            start = functools.partial(self._start_from_noise, width=width, height=height)
        else:
            if not 0.0 <= strength <= 1.0:
                raise InvalidParameterError(f"strength must be between 0 and 1, got {strength}")
            picture = open_image(image)
            processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
            height, width = processor.get_default_height_width(picture, height, width)
            pixels = processor.preprocess(picture, height=height, width=width)
            start = functools.partial(self._start_from_image, pixels=pixels, strength=strength)
            extra = {"strength": strength, **extra}
            if not isinstance(image, Image.Image):
                extra["init_image"] = str(Path(image))

        conditioners = self._control_conditioners(prepared, width, height)
        return self._generate(
            prompt, negative_prompt, width=width, height=height, steps=steps, guidance=guidance, seed=seed,
            num_images=num_images, scheduler=scheduler, batch_size=batch_size, original_size=original_size,
            target_size=target_size, crop_coords=crop_coords, progress=progress, start=start, extra=extra,
            conditioners=conditioners, pag=pag_settings(pag_scale, pag_layers),
        )
