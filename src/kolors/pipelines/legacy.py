"""The per-task pipeline classes of kolors 0.1, kept as thin wrappers around :class:`Pipeline`.

Each builds a :class:`~kolors.request.GenerationRequest` from its own call signature:

- ``Text2ImagePipeline``: ``pipe(prompt, negative_prompt, *, width, height, …)`` — the same as ``Pipeline``;
- ``Image2ImagePipeline``: ``pipe(prompt, image, negative_prompt, *, strength=0.3, …)``;
- ``ControlNetPipeline``: ``pipe(prompt, negative_prompt, *, controls, image=None, strength=0.8, …)``;
- ``InpaintPipeline``: ``pipe(prompt, image, mask, negative_prompt, *, strength, feather, …)`` and
  ``pipe.outpaint(prompt, image, extend, …)``.

New code calls ``Pipeline.generate(GenerationRequest(...))`` (or ``pipe(prompt, task=..., ...)``) directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from ..defaults import CONTROL_IMG2IMG_STRENGTH
from ..request import IMAGE_TO_IMAGE, INPAINT, OUTPAINT, TEXT_TO_IMAGE, Control
from .pipeline import GenerationResult, Pipeline

ImageInput = str | os.PathLike | Image.Image


def _controls(controls: Sequence[Control | Mapping[str, Any]]) -> list[Control]:
    return [c if isinstance(c, Control) else Control.from_dict(c) for c in controls]


def _path(value: Any) -> Any:
    return str(value) if isinstance(value, os.PathLike) else value


class Text2ImagePipeline(Pipeline):
    """A loaded Kolors model that turns prompts into images (``pipe(prompt, ...)``)."""


class Image2ImagePipeline(Pipeline):
    """A loaded Kolors model that redraws an input image following a prompt."""

    def __call__(self, prompt: str, image: ImageInput, negative_prompt: str | None = None, *,  # type: ignore[override]
                 strength: float | None = None, progress: bool | None = None, **fields: Any) -> GenerationResult:
        """Redraw ``image`` with ``strength`` in [0, 1] (0 keeps it, 1 ignores it); size defaults to the image's."""
        return super().__call__(prompt, negative_prompt, task=IMAGE_TO_IMAGE, init_image=_path(image),
                                strength=strength, progress=progress, **fields)


class ControlNetPipeline(Pipeline):
    """A loaded Kolors model plus ControlNets; each call takes ``controls`` and, optionally, an init image."""

    def __call__(self, prompt: str, negative_prompt: str | None = None, *,  # type: ignore[override]
                 controls: Sequence[Control | Mapping[str, Any]], image: ImageInput | None = None,
                 strength: float = CONTROL_IMG2IMG_STRENGTH, progress: bool | None = None,
                 **fields: Any) -> GenerationResult:
        """Generate with every control steering (their residuals add); with ``image``: image-to-image from it."""
        task = TEXT_TO_IMAGE if image is None else IMAGE_TO_IMAGE
        return super().__call__(prompt, negative_prompt, task=task, controls=_controls(controls),
                                init_image=_path(image), strength=None if image is None else strength,
                                progress=progress, **fields)


class InpaintPipeline(Pipeline):
    """A loaded Kolors model (Kolors-Inpainting or an ordinary one) that redraws masked parts of images."""

    def __call__(self, prompt: str, image: ImageInput, mask: ImageInput,  # type: ignore[override]
                 negative_prompt: str | None = None, *, controls: Sequence[Control | Mapping[str, Any]] = (),
                 progress: bool | None = None, **fields: Any) -> GenerationResult:
        """Redraw the white part of ``mask`` in ``image`` following ``prompt``; the rest is kept pixel for pixel."""
        return super().__call__(prompt, negative_prompt, task=INPAINT, init_image=_path(image), mask=_path(mask),
                                controls=_controls(controls), progress=progress, **fields)

    def outpaint(self, prompt: str, image: ImageInput, extend: int | Sequence[int],
                 negative_prompt: str | None = None, *, controls: Sequence[Control | Mapping[str, Any]] = (),
                 progress: bool | None = None, **fields: Any) -> GenerationResult:
        """Grow ``image`` by ``extend`` pixels (one number for every side, or left, top, right, bottom) and fill
        the new area following ``prompt``."""
        return super().__call__(prompt, negative_prompt, task=OUTPAINT, init_image=_path(image),
                                extend=extend if isinstance(extend, int) else tuple(extend),
                                controls=_controls(controls), progress=progress, **fields)
