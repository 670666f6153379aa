"""A job as the native API shows it (docs/server.md): status, queue position, progress, request, images."""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import Any

from ..metadata import format_parameters
from .command_line import command_line
from .events import JobEvents
from .jobqueue import RUNNING, Job, JobQueue
from .uploads import Uploads


def iso(seconds: float | None) -> str | None:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat() if seconds is not None else None


def progress_of(job: Job, events: JobEvents) -> dict[str, Any] | None:
    """The latest progress: this process's own events when it runs the job, else the database's."""
    if job.status != RUNNING:
        return None
    local = events.latest(job.id)
    if local:
        return {k: local[k] for k in ("step", "steps", "fraction", "eta_s")}
    if job.step is None or not job.steps:
        return {"step": 0, "steps": job.steps, "fraction": 0.0, "eta_s": None}
    return {"step": job.step, "steps": job.steps, "fraction": round(job.step / job.steps, 4), "eta_s": job.eta_s}


def job_json(job: Job, queue: JobQueue, events: JobEvents, uploads: Uploads) -> dict[str, Any]:
    """The job as JSON; each image's command names its uploaded inputs as they were sent (looked up once each)."""
    image_name = functools.lru_cache(maxsize=None)(uploads.display_name)
    images = []
    if job.results and not job.expired:
        for i, record in enumerate(job.results):
            params = record["parameters"]
            images.append({"url": f"/api/v1/jobs/{job.id}/images/{i}", "seed": record["seed"], "parameters": params,
                           "infotext": format_parameters(params), "command": command_line(params, image_name)})
    return {"id": job.id, "status": job.status, "position": queue.position(job), "progress": progress_of(job, events),
            "request": job.request, "error": job.error, "images": images, "attempts": job.attempts,
            "expired": job.expired,
            "created": iso(job.created), "started": iso(job.started), "finished": iso(job.finished)}
