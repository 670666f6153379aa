"""The server's parts wired together (settings, database queue, events, storage, workers) and what every API
does with them: submit a job, wait for it, read its images."""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from PIL import Image
from starlette.concurrency import run_in_threadpool

from .api_errors import ApiError
from .auth import ApiKeys
from .events import JobEvents
from .jobqueue import Job, JobQueue, QueueFull
from .metrics import Metrics
from .references import References, batch_key
from .settings import ServerSettings
from .storage import Storage
from .uploads import Uploads
from .worker import Worker

log = logging.getLogger("kolors.server")
FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "jpg": ("JPEG", "image/jpeg"),
           "webp": ("WEBP", "image/webp")}


@dataclass
class Service:
    settings: ServerSettings
    queue: JobQueue
    events: JobEvents
    storage: Storage
    uploads: Uploads
    references: References
    keys: ApiKeys
    metrics: Metrics
    workers: list[Worker] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # AUTOMATIC1111's settings as clients set them

    @property
    def ready(self) -> bool:
        return any(w.ready for w in self.workers)

    def pipeline(self) -> Any:
        """A loaded pipeline (for the tokenizer and defaults); 503 while the model loads."""
        for worker in self.workers:
            if worker.ready:
                return worker.pipe
        errors = [w.error for w in self.workers if w.error]
        raise ApiError(503, f"the model could not be loaded: {errors[0]}" if errors else
                       "the model is still loading: retry in a few seconds", headers={"Retry-After": "5"})

    # --- jobs -------------------------------------------------------------------------------------------------
    def submit(self, data: dict[str, Any], api: str) -> Job:
        """Check a native request and queue it (400 naming the problem; 429 with Retry-After when full)."""
        request = self.references.request(data)
        try:
            job = self.queue.submit(data, batch_key(request), request.num_images, api)
        except QueueFull as exc:
            raise ApiError(429, str(exc), code="queue_full", headers={"Retry-After": str(exc.retry_after)}) from None
        self.events.work.set()
        log.info("job %s queued (%s API, %d image%s)", job.id, api, job.num_images, "s" * (job.num_images > 1))
        return job

    async def submit_async(self, data: dict[str, Any], api: str) -> Job:
        return await run_in_threadpool(self.submit, data, api)

    async def job(self, job_id: str) -> Job:
        job = await run_in_threadpool(self.queue.get, job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id[:60]!r}: check the id (GET /api/v1/jobs lists them)", param="id")
        return job

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once it has ended (504 after the request timeout; the job itself goes on)."""
        timeout = self.settings.request_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            job = await self.job(job_id)
            if job.final:
                return job
            if time.monotonic() > deadline:
                raise ApiError(504, f"job {job_id} did not finish within {timeout:g} s; it is {job.status} and goes "
                                    f"on: follow it at GET /api/v1/jobs/{job_id}")
            await self.events.wait(job_id, 0.5)

    async def cancel(self, job_id: str) -> Job:
        await self.job(job_id)
        self.events.cancel(job_id)
        job = await run_in_threadpool(self.queue.cancel, job_id)
        self.events.changed(job_id)
        return job

    # --- images -----------------------------------------------------------------------------------------------
    def image_path(self, job: Job, index: int) -> Any:
        if job.status != "succeeded":
            raise ApiError(409 if not job.final else 404, f"job {job.id} is {job.status}: it has no images"
                           + (" yet" if not job.final else ""))
        if job.expired:
            raise ApiError(410, f"the images of job {job.id} were removed by the server's retention limit")
        if not 0 <= index < len(job.results or []):
            raise ApiError(404, f"job {job.id} has images 0..{len(job.results or []) - 1}, not {index}",
                           param="index")
        path = self.storage.result_path(job.id, index)
        if not path.is_file():
            raise ApiError(410, f"the image {index} of job {job.id} is no longer stored")
        return path

    def encoded(self, job: Job, index: int, fmt: str = "png", quality: int | None = None) -> bytes:
        """Image ``index`` of a finished job as PNG (with kolors' metadata), JPEG or WebP bytes."""
        path = self.image_path(job, index)
        if fmt == "png":
            return path.read_bytes()
        if fmt not in FORMATS:
            raise ApiError(400, f"unknown image format '{fmt}': use png, jpeg or webp", param="output_format")
        with Image.open(path) as image:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format=FORMATS[fmt][0], quality=quality or 90)
        return buffer.getvalue()


def service_of(request: Request) -> Service:
    return request.app.state.service
