"""Generation parameters inside PNG files: an AUTOMATIC1111-style ``parameters`` text and a ``kolors`` JSON chunk.

The ``parameters`` text follows A1111's infotext layout, which its PNG Info tab, civitai and the ComfyUI/A1111
metadata readers parse::

    <prompt, possibly several lines>
    Negative prompt: <negative prompt>
    Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5.0, Seed: 42, Size: 1024x1024, Model: …

Values holding ``,``, ``:``, ``"`` or a newline are JSON-quoted, as A1111 does. The ``kolors`` chunk holds the
parameter dict itself (JSON) and is what ``read_parameters`` prefers; the text is parsed only when it is missing
(images from other tools, or re-saved by a tool that kept only ``parameters``).
"""

from __future__ import annotations

import json
import logging
import os
import re
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
# A1111 sampler names (before 1.9 the schedule was part of the name) -> our scheduler names.
_FROM_A1111 = {name: key for key, (name, schedule) in A1111_SAMPLERS.items() if key != "default" and not schedule}
_FROM_A1111_KARRAS = {"DPM++ 2M": "dpmpp_2m_karras"}
_FROM_A1111_LEGACY = {"DPM++ 2M Karras": "dpmpp_2m_karras"}
# One ``key: value`` field of the last infotext line (A1111's own pattern).
_FIELD = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_NEGATIVE = "Negative prompt:"
PARAMETERS_CHUNK = "parameters"
JSON_CHUNK = "kolors"


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if re.search(r'[,:"\n]', text) else text


def _image_prompt_text(record: Any, key: str) -> str | None:
    """``NAME:SCALE`` of an IP-Adapter record (its input file's name), for the A1111 text."""
    if not isinstance(record, dict):
        return None
    return f"{Path(str(record.get(key) or '-')).name}:{record.get('scale')}"


def _controlnet_fields(controls: Any) -> dict[str, str]:
    """``ControlNet N`` fields (sd-webui-controlnet's layout) for the stored controls."""
    fields = {}
    for i, c in enumerate(controls if isinstance(controls, list) else []):
        if isinstance(c, dict):
            model = Path(str(c.get("controlnet") or "-")).name
            fields[f"ControlNet {i}"] = (f"Module: {c.get('type')}, Model: {model}, Weight: {c.get('scale')}, "
                                         f"Guidance Start: {c.get('start')}, Guidance End: {c.get('end')}")
    return fields


def format_parameters(params: dict[str, Any]) -> str:
    """The AUTOMATIC1111 ``parameters`` text for ``params`` (prompt, negative prompt, then key: value fields)."""
    scheduler = params.get("scheduler") or "default"
    sampler, schedule = A1111_SAMPLERS.get(scheduler, (scheduler, None))
    width, height = params.get("width"), params.get("height")
    fields = {
        "Steps": params.get("steps"),
        "Sampler": sampler,
        "Schedule type": schedule,
        "CFG scale": params.get("guidance"),
        "CFG stop": params.get("guidance_stop") if params.get("guidance_stop") not in (None, 1) else None,
        "Seed": params.get("seed"),
        "Size": f"{width}x{height}" if width is not None and height is not None else None,
        "Model": params.get("model"),
        "Denoising strength": params.get("strength"),
        "Lora hashes": params.get("lora_hashes"),
        "IP-Adapter": _image_prompt_text(params.get("ip_adapter"), "image"),
        "FaceID": _image_prompt_text(params.get("face_id"), "face"),
        "PAG scale": params.get("pag_scale"),
        "Kolors mode": params.get("mode"),
        "Text encoder quantisation": params.get("text_encoder_quant"),
        **_controlnet_fields(params.get("controls")),
        "Version": f"kolors {params.get('kolors_version') or ''}".strip(),
    }
    text = params.get("prompt") or ""
    if params.get("negative_prompt"):
        text += f"\n{_NEGATIVE} {params['negative_prompt']}"
    return text + "\n" + ", ".join(f"{k}: {_quote(v)}" for k, v in fields.items() if v is not None)


def parse_parameters(text: str) -> dict[str, Any]:
    """The generation parameters kolors understands in an AUTOMATIC1111 ``parameters`` text.

    Parsed as A1111 does: the last line holds the fields when it has at least three of them; the lines before
    are the prompt, then (from a line starting ``Negative prompt:``) the negative prompt. Fields kolors has no
    use for, or cannot read, are left out.
    """
    *lines, last = text.strip("\n").split("\n")
    found = _FIELD.findall(last)
    if len(found) < 3:
        lines.append(last)
        found = []
    prompt: list[str] = []
    negative: list[str] | None = None
    for line in lines:
        if negative is None and line.startswith(_NEGATIVE):
            negative = [line[len(_NEGATIVE):].lstrip()]
        elif negative is not None:
            negative.append(line)
        else:
            prompt.append(line)
    params: dict[str, Any] = {"prompt": "\n".join(prompt)}
    if negative is not None:
        params["negative_prompt"] = "\n".join(negative)

    fields: dict[str, str] = {}
    for key, value in found:
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                pass
        fields[key.strip()] = str(value)
    casts = (("steps", "Steps", int), ("guidance", "CFG scale", float), ("guidance_stop", "CFG stop", float),
             ("seed", "Seed", int),
             ("model", "Model", str), ("strength", "Denoising strength", float), ("lora_hashes", "Lora hashes", str),
             ("pag_scale", "PAG scale", float), ("mode", "Kolors mode", str),
             ("text_encoder_quant", "Text encoder quantisation", str))
    for key, name, cast in casts:
        if name in fields:
            try:
                params[key] = cast(fields[name])
            except ValueError:
                pass
    size = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", fields.get("Size", ""))
    if size:
        params["width"], params["height"] = int(size[1]), int(size[2])
    sampler = fields.get("Sampler")
    if sampler is not None:
        scheduler = scheduler_from_a1111(sampler, fields.get("Schedule type"))
        if scheduler:
            params["scheduler"] = scheduler
    return params


def scheduler_from_a1111(sampler: str, schedule_type: str | None = None) -> str | None:
    """Our scheduler name for an AUTOMATIC1111 sampler name (and schedule type); None when we have no equal."""
    karras = (schedule_type or "").strip().lower() == "karras"
    return (_FROM_A1111_KARRAS.get(sampler) if karras else None) or _FROM_A1111_LEGACY.get(sampler) \
        or (None if karras else _FROM_A1111.get(sampler))


def save_png(image: Image.Image, path: str | os.PathLike, params: dict[str, Any], *,
             overwrite: bool = True) -> Path:
    """Write ``image`` to ``path`` as a PNG with ``params`` embedded, atomically; returns ``path``.

    The PNG is written to a hidden temporary file in the same folder and renamed into place
    (:func:`kolors.files.atomic_file`), so ``path`` is either absent or complete, and nothing is left behind on
    failure, Ctrl-C or SIGTERM. With ``overwrite=False`` an existing ``path`` is kept and ``FileExistsError`` is
    raised. Other failures raise a one-line ``KolorsError`` naming the path.
    """
    from .files import atomic_file

    path = Path(path)
    info = PngImagePlugin.PngInfo()
    info.add_itxt(PARAMETERS_CHUNK, format_parameters(params))
    info.add_itxt(JSON_CHUNK, json.dumps(params, ensure_ascii=False, sort_keys=True, default=str))
    with atomic_file(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
        image.save(f, format="PNG", pnginfo=info)
    return path


def read_png_text(path: str | os.PathLike) -> dict[str, str]:
    """The text chunks of a PNG (tEXt, zTXt, iTXt), with one-line KolorsErrors for anything else."""
    from .images import reading

    path = Path(path)
    with reading("image", path), Image.open(path) as im:
        if im.format != "PNG":
            raise KolorsError(f"{path} is a {im.format} file, not a PNG: only PNGs carry kolors parameters")
        chunks = {k: str(v) for k, v in im.info.items() if isinstance(v, str)}
        if JSON_CHUNK not in chunks:
            # chunks stored after the image data are only seen once the image is read
            try:
                chunks.update((k, str(v)) for k, v in im.text.items())
            except (OSError, ValueError, SyntaxError):
                if PARAMETERS_CHUNK not in chunks:  # a damaged image whose text we still have is fine
                    raise
    return chunks


def read_parameters(path: str | os.PathLike) -> dict[str, Any]:
    """The generation parameters stored in a PNG: the ``kolors`` JSON chunk, else the A1111 ``parameters`` text.

    A damaged ``kolors`` chunk is not silently replaced: with a ``parameters`` text beside it, that text is used
    and a one-line warning says so; without one it is an error.
    """
    chunks = read_png_text(path)
    if JSON_CHUNK in chunks:
        try:
            params = json.loads(chunks[JSON_CHUNK])
        except ValueError:
            params = None
        if isinstance(params, dict):
            return params
        if PARAMETERS_CHUNK not in chunks:
            raise KolorsError(f"the kolors parameters in {path} are damaged (not a JSON object) and it has no A1111 "
                              "parameters text: nothing to replay")
        logging.getLogger("kolors").warning(
            "the kolors parameters in %s are damaged: using its A1111 parameters text instead (adapters, controls and "
            "other kolors-only settings are not replayed)", path)
    if PARAMETERS_CHUNK in chunks:
        return parse_parameters(chunks[PARAMETERS_CHUNK])
    raise KolorsError(f"{path} holds no generation parameters (no '{JSON_CHUNK}' or '{PARAMETERS_CHUNK}' text chunk)")
