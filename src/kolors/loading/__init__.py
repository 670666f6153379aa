"""Reading Kolors model folders and weight files in the published layouts.

``locate_model`` and ``EMBEDDED_MODEL_DIR`` import nothing heavy; ``load_components`` / ``KolorsComponents``
(torch, diffusers) are imported on first use, so that finding a folder or reading a config stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .locate import EMBEDDED_MODEL_DIR, locate_model

if TYPE_CHECKING:
    from .components import KolorsComponents, load_components

__all__ = ["EMBEDDED_MODEL_DIR", "KolorsComponents", "load_components", "locate_model"]


def __getattr__(name: str) -> Any:
    if name in ("KolorsComponents", "load_components"):
        from . import components

        return getattr(components, name)
    raise AttributeError(f"module 'kolors.loading' has no attribute {name!r}")
