"""What a server is told: where its model, adapters and data are, who may call it, and its limits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 7860  # AUTOMATIC1111's port: clients that speak its API try it first
API_KEYS_ENV = "KOLORS_API_KEYS"


@dataclass(frozen=True)
class Limits:
    """Per-request limits; a request over one is refused with a 400 naming the limit."""

    max_pixels: int = 2048 * 2048  # width x height of one image
    max_steps: int = 150
    max_images: int = 8  # images per request (OpenAI's n, A1111's batch_size x n_iter)
    max_prompt_chars: int = 4000
    max_upload_bytes: int = 20 * 2**20
    max_upload_pixels: int = 4096 * 4096  # decoded pixels of an uploaded image (decompression bombs refused)

    def as_json(self) -> dict[str, int]:
        return {"max_pixels": self.max_pixels, "max_steps": self.max_steps, "max_images": self.max_images,
                "max_prompt_chars": self.max_prompt_chars, "max_upload_bytes": self.max_upload_bytes}


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    model: str | None = None  # None: $KOLORS_MODEL, else the built-in model
    mode: str = "exact"
    device: str = "auto"
    dtype: str = "auto"
    workers: int | str = "auto"  # "auto": one per GPU, one on a CPU machine
    data_dir: Path = Path("kolors-data")
    database: str | None = None  # None: SQLite in data_dir
    lora_dir: Path | None = None
    controlnet_dir: Path | None = None
    ip_adapter_dir: Path | None = None
    face_id_dir: Path | None = None
    api_keys: frozenset[str] = frozenset()
    cors_origins: tuple[str, ...] = ()
    max_queue: int = 100
    batch_images: int = 8  # queued jobs with equal batch keys are denoised together, up to this many images
    lease_s: float = 30.0  # a running job whose worker stops renewing its lease for this long is taken back
    request_timeout_s: float = 600.0  # how long the synchronous APIs (OpenAI, A1111) wait for a job
    retention_age_s: float = 7 * 24 * 3600.0
    retention_bytes: int = 10 * 2**30
    previews: bool = True
    limits: Limits = field(default_factory=Limits)

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{(self.data_dir / 'kolors.db').absolute()}"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def read_api_keys(path: str | os.PathLike | None) -> frozenset[str]:
    """API keys from a file (one per line, ``#`` comments) and from $KOLORS_API_KEYS (comma-separated)."""
    keys: set[str] = set()
    if path is not None:
        from ..errors import KolorsError

        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise KolorsError(f"cannot read the API key file {path}: {exc.strerror or exc}") from None
        keys.update(line.split("#", 1)[0].strip() for line in text.splitlines())
    keys.update(part.strip() for part in os.environ.get(API_KEYS_ENV, "").split(","))
    return frozenset(k for k in keys if k)
