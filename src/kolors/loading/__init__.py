"""Reading Kolors model folders and weight files in the published layouts."""

from .components import KolorsComponents, load_components
from .locate import EMBEDDED_MODEL_DIR, locate_model

__all__ = ["EMBEDDED_MODEL_DIR", "KolorsComponents", "load_components", "locate_model"]
