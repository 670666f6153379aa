"""Generation parameters inside PNG files: an AUTOMATIC1111-style ``parameters`` text and a ``kolors`` JSON chunk."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from .errors import KolorsError

# Our scheduler names -> (A1111 sampler name, A1111 schedule type or None).
A1111_SAMPLERS = {
    "default": ("Euler", None),
    "euler": ("Euler", None),
    "euler_a": ("Euler a", None),
    "dpmpp_2m": ("DPM++ 2M", None),
    "dpmpp_2m_karras": ("DPM++ 2M", "Karras"),
    "ddim": ("DDIM", None),
    "unipc": ("UniPC", None),
}
_FROM_A1111 = {(v[0], v[1]): k for k, v in A1111_SAMPLERS.items() if k != "default"}
# Keys written as their own A1111 fields; the rest go into the JSON chunk only.
_A1111_FIELDS = (("steps", "Steps"), ("guidance", "CFG scale"), ("seed", "Seed"), ("model", "Model"),
                 ("strength", "Denoising strength"))


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if re.search(r"[,:\"\n]", text) else text


def format_parameters(params: dict[str, Any]) -> str:
    """The AUTOMATIC1111 ``parameters`` text for ``params`` (prompt, negative prompt, then key: value fields)."""
    lines = [params.get("prompt", "")]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    sampler, schedule = A1111_SAMPLERS.get(params.get("scheduler", "default"), (params.get("scheduler"), None))
    fields = [("Steps", params.get("steps")), ("Sampler", sampler), ("Schedule type", schedule),
              ("CFG scale", params.get("guidance")), ("Seed", params.get("seed")),
              ("Size", f"{params.get('width')}x{params.get('height')}"), ("Model", params.get("model")),
              ("Denoising strength", params.get("strength"))]
    fields.append(("Version", f"kolors {params.get('kolors_version', '')}".strip()))
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in fields if v is not None))
    return "\n".join(lines)


def parse_parameters(text: str) -> dict[str, Any]:
    """Generation parameters from an AUTOMATIC1111 ``parameters`` text (the fields kolors understands)."""
    *head, last = text.strip().split("\n")
    fields = dict(re.findall(r'\s*([\w ]+):\s*("(?:\\.|[^"])*"|[^,]*)(?:,|$)', last))
    fields = {k.strip(): (json.loads(v) if v.startswith('"') else v.strip()) for k, v in fields.items()}
    negative = [i for i, line in enumerate(head) if line.startswith("Negative prompt: ")]
    prompt_lines = head[: negative[0]] if negative else head
    params: dict[str, Any] = {"prompt": "\n".join(prompt_lines)}
    if negative:
        params["negative_prompt"] = "\n".join(head[negative[0]:]).removeprefix("Negative prompt: ")
    casts = {"Steps": int, "CFG scale": float, "Seed": int, "Model": str, "Denoising strength": float}
    for key, name in _A1111_FIELDS:
        if name in fields:
            params[key] = casts[name](fields[name])
    if "Size" in fields:
        params["width"], params["height"] = (int(v) for v in fields["Size"].split("x"))
    if "Sampler" in fields:
        params["scheduler"] = _FROM_A1111.get((fields["Sampler"], fields.get("Schedule type")), "default")
    return params


def save_png(image: Image.Image, path: str | os.PathLike, params: dict[str, Any]) -> Path:
    """Write ``image`` to ``path`` with ``params`` embedded; atomic (a temporary file renamed into place)."""
    path = Path(path)
    info = PngImagePlugin.PngInfo()
    info.add_itxt("parameters", format_parameters(params))
    info.add_itxt("kolors", json.dumps(params, ensure_ascii=False, sort_keys=True))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise KolorsError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG", pnginfo=info)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise KolorsError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    return path


def read_parameters(path: str | os.PathLike) -> dict[str, Any]:
    """The generation parameters stored in a PNG (the JSON chunk, else the AUTOMATIC1111 text)."""
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise KolorsError(f"{path} is a {im.format} file, not a PNG: only PNGs carry kolors parameters")
            text = dict(im.text) if hasattr(im, "text") else dict(im.info)
    except FileNotFoundError:
        raise KolorsError(f"image not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise KolorsError(f"cannot read {path}: {exc}") from None
    if "kolors" in text:
        try:
            return json.loads(text["kolors"])
        except ValueError:
            pass
    if "parameters" in text:
        return parse_parameters(text["parameters"])
    raise KolorsError(f"{path} holds no generation parameters (no 'kolors' or 'parameters' text chunk)")
