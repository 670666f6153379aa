"""A worker: one loaded pipeline, in a thread of the server, taking jobs from the queue.

It claims the oldest queued job with the queued jobs that can share its batch (equal batch keys), runs them with
``Pipeline.generate_batch``, reports each step (in-process events; the database every ``PROGRESS_EVERY_S``), stops
at the next step when one of them is cancelled (the others go back to the queue), and stores the images. A
heartbeat thread renews the lease of the jobs it holds, so another server takes them back only if this one dies.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any

from ..errors import GenerationCancelled, KolorsError
from .events import JobEvents
from .jobqueue import Job, JobQueue, worker_name
from .references import References
from .settings import ServerSettings
from .storage import Storage

log = logging.getLogger("kolors.server")
PROGRESS_EVERY_S = 0.5
RECOVER_EVERY_S = 2.0
PREVIEW_SIDE = 96


class Worker:
    def __init__(self, index: int, device: str, settings: ServerSettings, queue: JobQueue, events: JobEvents,
                 storage: Storage, references: References, metrics: Any = None) -> None:
        self.index = index
        self.device = device
        self.name = worker_name(index)
        self.settings = settings
        self.queue = queue
        self.events = events
        self.storage = storage
        self.references = references
        self.metrics = metrics
        self.pipe: Any = None
        self.error: str | None = None  # why the model could not be loaded
        self.holding: list[Job] = []  # the jobs being run, for the heartbeat
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- life -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        for target, name in ((self._run, "work"), (self._heartbeat, "lease")):
            thread = threading.Thread(target=target, name=f"kolors-{name}-{self.index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for job in list(self.holding):
            self.events.cancel(job.id)
        for thread in self._threads:
            thread.join(timeout)

    @property
    def ready(self) -> bool:
        return self.pipe is not None

    def load(self) -> None:
        from ..pipelines.pipeline import Pipeline

        s = self.settings
        started = time.perf_counter()
        self.pipe = Pipeline.from_pretrained(s.model, device=self.device, dtype=s.dtype, mode=s.mode)
        log.info("worker %s: model %s loaded on %s in %.1f s", self.name, self.pipe.model_name, self.device,
                 time.perf_counter() - started)

    def _run(self) -> None:
        try:
            self.load()
        except Exception as exc:  # noqa: BLE001 - reported by /ready and the log, the server stays up
            self.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, KolorsError) else str(exc)
            log.error("worker %s: cannot load the model: %s", self.name, self.error)
            return
        last_recover = 0.0
        while not self._stop.is_set():
            if time.monotonic() - last_recover > RECOVER_EVERY_S:
                last_recover = time.monotonic()
                self._guard(self.queue.recover)
            jobs = self._guard(self.queue.claim, self.name, self.settings.batch_images, self.settings.lease_s)
            if not jobs:
                self.events.work.wait(0.5)
                self.events.work.clear()
                continue
            self.holding = jobs
            try:
                self.run(jobs)
            finally:
                self.holding = []

    def _guard(self, fn: Any, *args: Any) -> Any:
        """A database call that may fail for a moment (a restarting database): logged, retried by the loop."""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001
            log.error("worker %s: database error: %s", self.name, exc)
            time.sleep(1.0)
            return None

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.settings.lease_s / 4):
            held = list(self.holding)
            if held:
                asked = self._guard(self.queue.renew, self.name, [j.id for j in held], self.settings.lease_s)
                for job_id in asked or ():
                    self.events.cancel(job_id)

    # --- one batch --------------------------------------------------------------------------------------------
    def run(self, jobs: list[Job]) -> None:
        """Run claimed jobs (equal batch keys) as one batch; each ends succeeded, failed or cancelled."""
        requests, runnable = [], []
        for job in jobs:
            try:
                requests.append(self.references.request(job.request))
                runnable.append(job)
            except KolorsError as exc:  # e.g. an upload removed since it was accepted
                self._end(job, "failed", lambda j, e=str(exc): self.queue.fail(self.name, j, e))
        if not runnable:
            return
        for job in runnable:
            self.events.started(job.id)
        tracker = _Progress(self, runnable, requests)
        started = time.perf_counter()
        try:
            results = self.pipe.generate_batch(requests, progress=False, on_step=tracker.step)
        except GenerationCancelled:
            for job in runnable:
                if self.events.is_cancelled(job.id):
                    self._end(job, "cancelled", lambda j: self.queue.cancelled(self.name, j, tracker.done))
                else:  # a batch partner was cancelled: this one waits for its turn again
                    self.queue.release(self.name, job)
                    self.events.done(job.id)
            return
        except KolorsError as exc:
            for job in runnable:
                self._end(job, "failed", lambda j, e=str(exc): self.queue.fail(self.name, j, e))
            return
        except Exception as exc:  # noqa: BLE001 - one bad job must not stop the worker
            log.error("worker %s: jobs %s failed:\n%s", self.name, [j.id for j in runnable], traceback.format_exc())
            message = f"internal error: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            for job in runnable:
                self._end(job, "failed", lambda j, m=message: self.queue.fail(self.name, j, m))
            return
        seconds = time.perf_counter() - started
        for job, result in zip(runnable, results, strict=True):
            records = []
            for i, (image, params) in enumerate(zip(result.images, result.parameters, strict=True)):
                self.storage.save_result(job.id, i, image, params)
                records.append({"seed": params["seed"], "parameters": params})
            self._end(job, "succeeded", lambda j, r=records: self.queue.succeed(self.name, j, r))
        if self.metrics is not None:
            self.metrics.generated(sum(len(r.images) for r in results), seconds, len(runnable))

    def _end(self, job: Job, status: str, record: Any) -> None:
        record(job)
        self.events.done(job.id)
        if self.metrics is not None:
            self.metrics.finished(status)
        log.info("job %s %s (worker %s)", job.id, status, self.name)

    # --- previews ---------------------------------------------------------------------------------------------
    def preview(self, latents: Any) -> str | None:
        import base64
        import io

        try:
            image = self.pipe.preview(latents[:1])[0]
        except Exception:  # noqa: BLE001 - a preview is optional
            return None
        image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class _Progress:
    """The ``on_step`` of one batch: events per step, progress in the database now and then, cancellation."""

    def __init__(self, worker: Worker, jobs: list[Job], requests: list[Any]) -> None:
        self.worker = worker
        self.jobs = jobs
        self.started = time.perf_counter()
        self.last_write = 0.0
        self.done: int | None = None
        # the row where each job's images start, to preview its own first image
        self.first_rows, row = [], 0
        for request in requests:
            self.first_rows.append(row)
            row += request.num_images

    def step(self, info: Any) -> None:
        w = self.worker
        if any(w.events.is_cancelled(j.id) for j in self.jobs):
            raise GenerationCancelled("cancelled")
        step, steps = info.batch * info.steps + info.step, info.steps * info.batches
        self.done = step
        fraction = info.fraction
        elapsed = time.perf_counter() - self.started
        eta = round(elapsed / fraction * (1 - fraction), 2) if fraction > 0 else None
        rows = len(info.latents)
        for job, first in zip(self.jobs, self.first_rows, strict=True):
            event = {"step": step, "steps": steps, "fraction": round(fraction, 4), "eta_s": eta}
            local = first - info.batch * rows
            if w.settings.previews and 0 <= local < rows and w.events.watched(job.id):
                preview = w.preview(info.latents[local : local + 1])
                if preview:
                    event["preview"] = preview
            w.events.progress(job.id, event)
        now = time.perf_counter()
        if now - self.last_write >= PROGRESS_EVERY_S or step == steps:
            self.last_write = now
            asked = w.queue.renew(w.name, [j.id for j in self.jobs], w.settings.lease_s,
                                  {j.id: (step, steps, eta) for j in self.jobs})
            for job_id in asked:
                w.events.cancel(job_id)
