"""The values Kolors nodes pass along the graph besides ComfyUI's own types (IMAGE, MASK, LATENT, VAE, STRING).

Every value is immutable: a node that adds something (a LoRA, a ControlNet, an image prompt) returns a changed
copy, so one loaded model can feed several branches of a graph and ComfyUI's output cache stays valid. The
sampler turns them into one :class:`~kolors.request.GenerationRequest`:

- ``KOLORS_MODEL`` (:class:`KolorsModel`): the loaded pipeline and what applies to the whole model — LoRAs
  (chained), an IP-Adapter and/or FaceID image prompt, perturbed-attention guidance;
- ``KOLORS_CONDITIONING`` (:class:`KolorsConditioning`): a prompt and what steers it — ControlNet controls and the
  SDXL micro-conditioning sizes (the sampler reads these from its positive input);
- ``KOLORS_CONTROLNET`` (:class:`KolorsControlNet`): a ControlNet folder and its control type.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

MODEL = "KOLORS_MODEL"
CONDITIONING = "KOLORS_CONDITIONING"
CONTROLNET = "KOLORS_CONTROLNET"


@dataclass(frozen=True)
class KolorsModel:
    """A loaded :class:`~kolors.pipelines.pipeline.Pipeline` and the model-wide adapters to apply with it."""

    pipe: Any
    loras: tuple = ()  # kolors.request.Lora, in the order the nodes were chained
    ip_adapter: Any = None  # kolors.request.ImagePrompt
    face_id: Any = None  # kolors.request.FaceId
    pag_scale: float = 0.0
    pag_layers: tuple[str, ...] | None = None

    def replace(self, **changes: Any) -> KolorsModel:
        return dataclasses.replace(self, **changes)

    def request_fields(self) -> dict[str, Any]:
        """The request fields this model contributes."""
        return {"loras": list(self.loras), "ip_adapter": self.ip_adapter, "face_id": self.face_id,
                "pag_scale": self.pag_scale, "pag_layers": self.pag_layers}


@dataclass(frozen=True)
class KolorsConditioning:
    """A prompt, the ControlNet controls applied to it and the SDXL size conditioning ((height, width) pairs;
    None: the output size)."""

    text: str
    controls: tuple = ()  # kolors.request.Control, with ready maps (detect=False)
    original_size: tuple[int, int] | None = None
    target_size: tuple[int, int] | None = None
    crop_coords: tuple[int, int] = (0, 0)

    def replace(self, **changes: Any) -> KolorsConditioning:
        return dataclasses.replace(self, **changes)

    def request_fields(self) -> dict[str, Any]:
        """The request fields this (positive) conditioning contributes."""
        return {"prompt": self.text, "controls": list(self.controls), "original_size": self.original_size,
                "target_size": self.target_size, "crop_coords": self.crop_coords}


@dataclass(frozen=True)
class KolorsControlNet:
    """A ControlNet: its folder (or None: the pipeline's built-in one for ``kind``) and its control type."""

    kind: str
    folder: str | None
