"""Pipelines: one loaded model (:class:`~kolors.pipelines.pipeline.Pipeline`) that serves every task, the tasks'
plans (tasks.py), inpainting's pieces (inpainting.py), latent previews (preview.py), and the per-task classes
of kolors 0.1 as thin wrappers (legacy.py). Names are imported on first use."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Pipeline": "pipeline", "GenerationResult": "pipeline", "GenerationDefaults": "pipeline", "StepInfo": "pipeline",
    "Text2ImagePipeline": "legacy", "Image2ImagePipeline": "legacy", "ControlNetPipeline": "legacy",
    "InpaintPipeline": "legacy",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
