"""kolors: run, adapt, train and serve Kolors text-to-image models.

The public names are imported on first use, so ``import kolors`` (and ``kolors --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import InvalidParameterError, KolorsError, ModelLayoutError

__version__ = "0.1.0"

_LAZY = {
    "GenerationDefaults": "kolors.pipelines.text_to_image",
    "GenerationResult": "kolors.pipelines.text_to_image",
    "Text2ImagePipeline": "kolors.pipelines.text_to_image",
}

if TYPE_CHECKING:
    from .pipelines.text_to_image import GenerationDefaults, GenerationResult, Text2ImagePipeline


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kolors' has no attribute {name!r}")


def load_pipeline(*args: Any, **kwargs: Any) -> Text2ImagePipeline:
    """Load a Kolors model folder: ``Text2ImagePipeline.from_pretrained`` (see there for the arguments)."""
    from .pipelines.text_to_image import Text2ImagePipeline

    return Text2ImagePipeline.from_pretrained(*args, **kwargs)


__all__ = [
    "GenerationDefaults",
    "GenerationResult",
    "InvalidParameterError",
    "KolorsError",
    "ModelLayoutError",
    "Text2ImagePipeline",
    "load_pipeline",
]
