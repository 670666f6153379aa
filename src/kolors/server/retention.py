"""Result retention: images of jobs older than the age limit are removed, then the oldest ones until the results
fit the size limit; uploads older than the age limit that no waiting job names are removed. Job rows stay (their
images answer 410 Gone)."""

from __future__ import annotations

import logging
import threading
import time

from .jobqueue import QUEUED, RUNNING, JobQueue
from .settings import ServerSettings
from .storage import Storage
from .uploads import Uploads

log = logging.getLogger("kolors.server")
SWEEP_EVERY_S = 60.0


class Retention:
    def __init__(self, settings: ServerSettings, queue: JobQueue, storage: Storage, uploads: Uploads) -> None:
        self.settings, self.queue, self.storage, self.uploads = settings, queue, storage, uploads
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kolors-retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(SWEEP_EVERY_S):
            try:
                self.sweep()
            except Exception as exc:  # noqa: BLE001 - retried at the next sweep
                log.error("retention sweep failed: %s", exc)

    def sweep(self, now: float | None = None) -> int:
        """Remove what is over the limits; returns how many jobs' images were removed."""
        now = time.time() if now is None else now
        old = self.queue.finished_before(now - self.settings.retention_age_s, limit=10_000)
        removed = [j.id for j in old]
        recent = self.queue.finished_before(now + 1, limit=100_000)
        sizes = [(j.id, self.storage.result_bytes(j.id)) for j in recent if j.id not in set(removed)]
        total = sum(size for _, size in sizes)
        for job_id, size in sizes:  # oldest first
            if total <= self.settings.retention_bytes:
                break
            removed.append(job_id)
            total -= size
        for job_id in removed:
            self.storage.remove_results(job_id)
        self.queue.expire(removed)
        waiting = self.queue.list([QUEUED, RUNNING], limit=100_000)
        named = {part.partition("upload:")[2] for j in waiting for part in _strings(j.request)
                 if part.startswith("upload:")}
        self.uploads.remove_older_than(now - self.settings.retention_age_s, named)
        if removed:
            log.info("retention: removed the images of %d jobs", len(removed))
        return len(removed)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []
