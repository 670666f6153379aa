"""The ``kolors`` command line that makes an image again from its stored parameters."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Callable

from ..request import IMAGE_TO_IMAGE, INPAINT, OUTPAINT

_COMMANDS = {IMAGE_TO_IMAGE: "img2img", INPAINT: "inpaint", OUTPAINT: "outpaint"}
_FLAGS = (("negative_prompt", "--negative-prompt"), ("width", "--width"), ("height", "--height"),
          ("steps", "--steps"), ("guidance", "--guidance"), ("guidance_stop", "--guidance-stop"),
          ("scheduler", "--scheduler"), ("seed", "--seed"),
          ("strength", "--strength"), ("feather", "--feather"), ("pag_scale", "--pag-scale"), ("mode", "--mode"))


def base_name(path: str) -> str:
    return Path(str(path)).name


def command_line(params: dict[str, Any], image_name: Callable[[str], str] = base_name) -> str:
    """``kolors generate "prompt" --seed 42 ...`` for a stored record; image inputs are named by ``image_name`` (of
    their stored path), other files by their base name."""
    task = params.get("task")
    words = ["kolors", _COMMANDS.get(task, "generate"), params.get("prompt") or ""]
    if task in _COMMANDS and params.get("init_image"):
        words += ["--image", image_name(params["init_image"])]
    if task == INPAINT and params.get("mask"):
        words += ["--mask", image_name(params["mask"])]
    if task == OUTPAINT and params.get("extend"):
        words += ["--extend", ",".join(str(v) for v in params["extend"])]
    for key, flag in _FLAGS:
        value = params.get(key)
        if value is not None and value != "" and not (key == "pag_scale" and not value) \
                and not (key == "guidance_stop" and value == 1):
            if key in ("width", "height") and task in (INPAINT, OUTPAINT):
                continue
            words += [flag, str(value)]
    for lora in params.get("loras") or []:
        words += ["--lora", f"{base_name(lora.get('path'))}:{lora.get('weight', 1.0)}"]
    for control in params.get("controls") or []:
        words += ["--control", f"{control.get('type')}={image_name(control.get('image'))}:{control.get('scale')}"]
    if params.get("model") and params["model"] != "built-in":
        words += ["--model", str(params["model"])]
    return shlex.join(words)
