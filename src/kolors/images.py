"""Reading the images users give (input images, masks, control and reference images) safely.

A file is checked from its header before its pixels are decoded: missing, unreadable, not an image, or larger
than :data:`MAX_INPUT_PIXELS` (a decompression bomb declares a huge size in a few bytes) are one-line errors.
Importable without torch.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import KolorsError

MAX_INPUT_PIXELS = 8192 * 8192  # larger inputs are refused before decoding (they would be resized down anyway)


@contextlib.contextmanager
def reading(what: str, path: Any = None) -> Iterator[None]:
    """Failures while reading an image (``path``, or bytes when None) as one-line KolorsErrors."""
    from PIL import Image, UnidentifiedImageError

    name = what if path is None else f"{what} {path}"
    try:
        yield
    except KolorsError:
        raise
    except FileNotFoundError:
        raise KolorsError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise KolorsError(f"{name} is a folder, not an image file") from None
    except Image.DecompressionBombError:
        raise KolorsError(f"{name} declares more pixels than the {MAX_INPUT_PIXELS // 10**6}-megapixel limit: use a "
                          "smaller image") from None
    except UnidentifiedImageError:
        raise KolorsError(f"cannot read {name}: not an image file PIL can read (PNG, JPEG, WebP, …)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise KolorsError(f"cannot read {name}: {reason}") from None


def _open(path: str | os.PathLike, what: str):
    """The PIL image of ``path``, opened lazily (header only), with one-line errors."""
    from PIL import Image

    with reading(what, path), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def _check_size(size: tuple[int, int], what: str, path: Any) -> tuple[int, int]:
    width, height = size
    if width < 1 or height < 1:
        raise KolorsError(f"{what} {path} is empty ({width}×{height} pixels)")
    if width * height > MAX_INPUT_PIXELS:
        raise KolorsError(f"{what} {path} is {width}×{height} pixels, more than the {MAX_INPUT_PIXELS // 10**6}-"
                          "megapixel limit: use a smaller image")
    return size


def check_image_input(value: Any, what: str) -> tuple[int, int] | None:
    """The (width, height) of an image input — a path (only the header is read) or a PIL image — checked to be
    readable and of a sane size; None for other in-memory inputs (arrays, tensors)."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        with _open(value, what) as im:
            return _check_size(im.size, what, value)
    size = getattr(value, "size", None)
    if isinstance(size, tuple) and len(size) == 2:
        return _check_size(size, what, "(in memory)")
    return None


def open_image(value: Any, what: str = "image", mode: str = "RGB"):
    """A decoded PIL image in ``mode`` from a path or a PIL image, with one-line errors (truncated files, bombs)."""
    from PIL import Image

    if isinstance(value, Image.Image):
        _check_size(value.size, what, "(in memory)")
        return value.convert(mode)
    if not isinstance(value, (str, Path)):
        raise KolorsError(f"{what} must be a file path or an image, got {type(value).__name__}")
    with _open(value, what) as im, reading(what, value):
        _check_size(im.size, what, value)
        return im.convert(mode)


def open_mask(value: Any, what: str = "mask"):
    """A greyscale mask (white: redraw, black: keep) from a path or an image."""
    return open_image(value, what, mode="L")
