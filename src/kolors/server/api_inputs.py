"""What the OpenAI and A1111 routes turn their inputs into: uploads (base64 text or files), masks in kolors'
convention (white = redraw), Kolors options passed as extra fields, and ``WxH`` sizes."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import json
import re
from typing import Any

from PIL import Image, ImageOps

from ..request import GenerationRequest
from .api_errors import ApiError
from .uploads import Uploads

REQUEST_FIELDS = {f.name for f in dataclasses.fields(GenerationRequest)}
TEXT_FIELDS = {"prompt", "negative_prompt", "task", "scheduler", "mode", "init_image", "mask"}
_SIZE = re.compile(r"\s*(\d{1,6})\s*[xX×]\s*(\d{1,6})\s*")


def base64_bytes(text: Any, field: str) -> bytes:
    """The bytes of a base64 image (``data:image/...;base64,`` prefix allowed)."""
    if not isinstance(text, str) or not text:
        raise ApiError(422, f"{field} must be a base64-encoded image", param=field)
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise ApiError(422, f"{field} is not valid base64: send the image file's bytes base64-encoded",
                       param=field) from None


def upload(uploads: Uploads, data: bytes, field: str) -> tuple[str, tuple[int, int]]:
    """Keep an input image; returns its ``upload:<id>`` reference and size."""
    stored = uploads.add(data, field, what=field)
    return f"upload:{stored.id}", (stored.width, stored.height)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def mask_from_alpha(data: bytes, size: tuple[int, int]) -> bytes:
    """OpenAI's mask (fully transparent pixels are edited) as kolors' (white = redraw)."""
    with Image.open(io.BytesIO(data)) as mask:
        if mask.size != size:
            raise ApiError(400, f"the mask is {mask.width}x{mask.height} but the image is {size[0]}x{size[1]}: "
                                "send a mask of the image's size", param="mask")
        if "A" not in mask.getbands() and not (mask.mode == "P" and "transparency" in mask.info):
            raise ApiError(400, "the mask has no alpha channel: send a PNG whose fully transparent pixels mark "
                                "what to redraw", param="mask")
        alpha = mask.convert("RGBA").getchannel("A")
    redraw = alpha.point(lambda a: 255 if a == 0 else 0)
    if redraw.getbbox() is None:
        raise ApiError(400, "the mask has no fully transparent pixels: make the area to redraw transparent",
                       param="mask")
    return png_bytes(redraw)


def inverted_mask(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as mask:
        return png_bytes(ImageOps.invert(mask.convert("L")))


def size(text: Any, field: str = "size") -> tuple[int, int] | None:
    """``"WxH"`` as (width, height); None for ``auto`` or nothing."""
    if text is None or text == "auto":
        return None
    match = _SIZE.fullmatch(text) if isinstance(text, str) else None
    if not match:
        raise ApiError(400, f"{field} must be WIDTHxHEIGHT such as 1024x1024 (or auto), got {str(text)[:40]!r}",
                       param=field)
    return int(match[1]), int(match[2])


def kolors_options(extra: dict[str, Any], reserved: set[str], *, parse_text: bool = False) -> dict[str, Any]:
    """Extra body fields that are GenerationRequest fields (the API's own fields in ``reserved`` excluded); any
    other unknown field is a 400 naming it. ``parse_text``: multipart values are text, read as JSON when they
    are JSON."""
    options = {}
    for key, value in extra.items():
        if key in reserved:
            continue
        if key not in REQUEST_FIELDS:
            raise ApiError(400, f"unknown field '{key[:60]}': Kolors options are the fields of a GenerationRequest "
                                "(negative_prompt, seed, steps, guidance, scheduler, loras, ...)", param=key)
        if parse_text and isinstance(value, str) and key not in TEXT_FIELDS:
            try:
                value = json.loads(value)
            except ValueError:
                pass
        options[key] = value
    return options
