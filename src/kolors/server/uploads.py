"""Uploaded images: the file (in :class:`~kolors.server.storage.Storage`) and its row in the uploads table."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import Engine, delete, select

from .database import uploads
from .storage import Storage, StoredUpload


class Uploads:
    def __init__(self, engine: Engine, storage: Storage) -> None:
        self.engine = engine
        self.storage = storage

    def add(self, data: bytes, name: str, what: str = "upload") -> StoredUpload:
        """Check and keep an image (raises InvalidParameterError with the reason)."""
        stored = self.storage.save_upload(data, name, what)
        with self.engine.begin() as conn:
            conn.execute(uploads.insert().values(id=stored.id, name=stored.name, file=stored.file,
                                                 width=stored.width, height=stored.height, bytes=stored.bytes,
                                                 created=time.time()))
        return stored

    def get(self, upload_id: str) -> StoredUpload | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(uploads).where(uploads.c.id == upload_id)).first()
        if row is None:
            return None
        return StoredUpload(row.id, row.name, row.file, row.width, row.height, row.bytes)

    def path(self, upload_id: str) -> Path | None:
        stored = self.get(upload_id)
        if stored is None:
            return None
        path = self.storage.upload_path(stored.file)
        return path if path.is_file() else None

    def display_name(self, path: str) -> str:
        """The name an uploaded image was sent with, from its stored path; any other file: its base name."""
        name = Path(str(path)).name
        stem = Path(name).stem
        stored = self.get(stem) if stem.startswith("up_") else None
        return stored.name if stored is not None and stored.file == name else name

    def remove_older_than(self, cutoff: float, keep: set[str]) -> int:
        """Remove uploads made before ``cutoff`` except those in ``keep`` (named by waiting jobs)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(uploads.c.id, uploads.c.file).where(uploads.c.created < cutoff)).all()
        removed = [r for r in rows if r.id not in keep]
        for r in removed:
            self.storage.remove_upload(r.file)
        if removed:
            with self.engine.begin() as conn:
                conn.execute(delete(uploads).where(uploads.c.id.in_([r.id for r in removed])))
        return len(removed)
