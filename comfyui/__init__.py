"""The Kolors node pack for ComfyUI: link or copy this folder into ComfyUI's custom_nodes/.

The nodes themselves are the ``kolors.comfyui`` package. Install kolors into ComfyUI's Python
(``pip install -e /path/to/kolors[quant]``); when it is not installed but this folder sits in (or is linked from)
a kolors checkout, the checkout's ``src/`` is used. Example workflows: ``example_workflows/`` (ComfyUI lists them
under Workflow > Browse Templates).
"""

import sys
from pathlib import Path

try:
    import kolors.comfyui as _pack
except ImportError:
    _src = Path(__file__).resolve().parent.parent / "src"
    if not (_src / "kolors" / "comfyui" / "__init__.py").is_file():
        raise ImportError("the Kolors nodes need the kolors package: run `pip install -e /path/to/kolors[quant]` with "
                          "ComfyUI's Python") from None
    sys.path.insert(0, str(_src))
    import kolors.comfyui as _pack

NODE_CLASS_MAPPINGS = _pack.NODE_CLASS_MAPPINGS
NODE_DISPLAY_NAME_MAPPINGS = _pack.NODE_DISPLAY_NAME_MAPPINGS
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
