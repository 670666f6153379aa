"""kolors: run, adapt, train and serve Kolors text-to-image models.

```python
from kolors import GenerationRequest, load_pipeline

pipe = load_pipeline()                                   # the built-in model; or a Kolors folder
result = pipe.generate(GenerationRequest("一只红色的圆", seed=42))
result.images[0].save("circle.png")
```

The public names are imported on first use, so ``import kolors`` (and ``kolors --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import GenerationCancelled, InvalidParameterError, KolorsError, ModelLayoutError
from .version import __version__

_LAZY = {
    "GenerationRequest": "kolors.request",
    "Control": "kolors.request",
    "Lora": "kolors.request",
    "ImagePrompt": "kolors.request",
    "FaceId": "kolors.request",
    "Pipeline": "kolors.pipelines.pipeline",
    "GenerationDefaults": "kolors.pipelines.pipeline",
    "GenerationResult": "kolors.pipelines.pipeline",
    "StepInfo": "kolors.pipelines.pipeline",
    "Text2ImagePipeline": "kolors.pipelines.legacy",
    "Image2ImagePipeline": "kolors.pipelines.legacy",
    "ControlNetPipeline": "kolors.pipelines.legacy",
    "InpaintPipeline": "kolors.pipelines.legacy",
}

if TYPE_CHECKING:
    from .pipelines.legacy import ControlNetPipeline, Image2ImagePipeline, InpaintPipeline, Text2ImagePipeline
    from .pipelines.pipeline import GenerationDefaults, GenerationResult, Pipeline, StepInfo
    from .request import Control, FaceId, GenerationRequest, ImagePrompt, Lora


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kolors' has no attribute {name!r}")


def load_pipeline(*args: Any, **kwargs: Any) -> Pipeline:
    """Load a Kolors model folder: ``Pipeline.from_pretrained`` (see there for the arguments)."""
    from .pipelines.pipeline import Pipeline

    return Pipeline.from_pretrained(*args, **kwargs)


__all__ = ["__version__", "GenerationCancelled", "InvalidParameterError", "KolorsError", "ModelLayoutError", "load_pipeline",
           *sorted(_LAZY)]
