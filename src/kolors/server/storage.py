"""The server's files under its data folder: uploaded images and result PNGs, each written atomically.

Uploads are checked before they are kept: at most ``max_upload_bytes``, an image format PIL reads, at most
``max_upload_pixels`` decoded pixels (checked from the header, so a decompression bomb is refused before it is
decoded), and fully decodable. Nothing here takes a path from a request: files are named by ids the server made.
"""

from __future__ import annotations

import io
import re
import secrets
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import InvalidParameterError
from ..files import write_bytes
from ..images import reading
from ..metadata import save_png
from .settings import Limits

UPLOAD_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif"}
_ID = re.compile(r"[a-z]{2,4}_[0-9a-f]{8,40}")


@dataclass(frozen=True)
class StoredUpload:
    id: str
    name: str
    file: str
    width: int
    height: int
    bytes: int


class Storage:
    def __init__(self, root: Path, limits: Limits) -> None:
        self.root = root
        self.limits = limits
        self.uploads = root / "uploads"
        self.results = root / "results"
        for folder in (self.uploads, self.results):
            folder.mkdir(parents=True, exist_ok=True)

    # --- uploads ----------------------------------------------------------------------------------------------
    def check_image(self, data: bytes, what: str = "upload") -> Image.Image:
        """``data`` decoded, within the limits; one-line errors otherwise."""
        limit = self.limits.max_upload_bytes
        if len(data) > limit:
            raise InvalidParameterError(f"the {what} is {len(data)} bytes, more than the limit of {limit}: "
                                        "send a smaller image")
        if not data:
            raise InvalidParameterError(f"the {what} is empty: send an image file (PNG, JPEG, WebP)")
        pixels = self.limits.max_upload_pixels
        with reading(what), warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below is ours
            image = Image.open(io.BytesIO(data))
            if image.format not in UPLOAD_FORMATS:
                raise InvalidParameterError(f"the {what} is a {image.format} file: send PNG, JPEG or WebP")
            if image.width * image.height > pixels:
                raise InvalidParameterError(f"the {what} is {image.width}x{image.height} pixels, more than the "
                                            f"limit of {pixels}: send a smaller image")
            image.load()
        return image

    def save_upload(self, data: bytes, name: str, what: str = "upload") -> StoredUpload:
        image = self.check_image(data, what)
        upload_id = "up_" + secrets.token_hex(12)
        file = upload_id + UPLOAD_FORMATS[image.format]
        write_bytes(self.uploads / file, data)
        clean = re.sub(r"[^\w.\- ]", "_", Path(name or "image").name)[:200] or "image"
        return StoredUpload(upload_id, clean, file, image.width, image.height, len(data))

    def upload_path(self, file: str) -> Path:
        return self.uploads / Path(file).name

    def remove_upload(self, file: str) -> None:
        self.upload_path(file).unlink(missing_ok=True)

    # --- results ----------------------------------------------------------------------------------------------
    def result_path(self, job_id: str, index: int) -> Path:
        if not _ID.fullmatch(job_id):
            raise InvalidParameterError(f"'{job_id}' is not a job id")
        return self.results / job_id / f"{index}.png"

    def save_result(self, job_id: str, index: int, image: Image.Image, params: dict[str, Any]) -> Path:
        path = self.result_path(job_id, index)
        path.parent.mkdir(exist_ok=True)
        return save_png(image, path, params)

    def result_bytes(self, job_id: str) -> int:
        folder = self.results / job_id
        return sum(f.stat().st_size for f in folder.glob("*.png")) if folder.is_dir() else 0

    def remove_results(self, job_id: str) -> None:
        folder = self.results / job_id
        if _ID.fullmatch(job_id) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
