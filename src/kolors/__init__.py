"""kolors: run, adapt, train and serve Kolors text-to-image models."""

from __future__ import annotations

from .errors import InvalidParameterError, KolorsError, ModelLayoutError
from .pipelines.text_to_image import GenerationDefaults, GenerationResult, Text2ImagePipeline

__version__ = "0.1.0"

load_pipeline = Text2ImagePipeline.from_pretrained

__all__ = [
    "GenerationDefaults",
    "GenerationResult",
    "InvalidParameterError",
    "KolorsError",
    "ModelLayoutError",
    "Text2ImagePipeline",
    "load_pipeline",
]
