"""A worker: one loaded pipeline, in a thread of the server, taking jobs from the queue.

It claims the oldest queued job with the queued jobs that can share its batch (equal batch keys), runs them with
``Pipeline.generate_batch``, reports each step (in-process events; the database every ``PROGRESS_EVERY_S``), stops
at the next step when one of them is cancelled (the others go back to the queue), and stores the images. A
heartbeat thread renews the lease of the jobs it holds, so another server takes them back only if this one dies.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

from ..errors import GenerationCancelled, KolorsError
from .jobqueue import Job, worker_name

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger("kolors.server")
PROGRESS_EVERY_S = 0.5
RECOVER_EVERY_S = 2.0
PREVIEW_SIDE = 96


class Worker:
    def __init__(self, index: int, device: str, service: Service) -> None:
        self.index = index
        self.device = device
        self.name = worker_name(index)
        self.service = service  # the queue, events, storage, settings it works with
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
        """Stop after the current step; the jobs being run go back to the queue (another server, or this one
        after a restart, runs them)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def ready(self) -> bool:
        return self.pipe is not None

    def load(self) -> None:
        from ..pipelines.pipeline import Pipeline

        s = self.service.settings
        started = time.perf_counter()
        self.pipe = Pipeline.from_pretrained(s.model, device=self.device, dtype=s.dtype, mode=s.mode)
        log.info("worker %s: model %s loaded on %s in %.1f s", self.name, self.pipe.model_name, self.pipe.device,
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
                self._guard(self.service.queue.recover)
            jobs = self._guard(self.service.queue.claim, self.name, self.service.settings.batch_images, self.service.settings.lease_s)
            if not jobs:
                self.service.events.work.wait(0.5)
                self.service.events.work.clear()
                continue
            self.holding = jobs
            try:
                self.run(jobs)
            except Exception as exc:  # noqa: BLE001 - e.g. the disk is full: the jobs fail, the worker goes on
                log.error("worker %s: jobs %s failed:\n%s", self.name, [j.id for j in jobs], traceback.format_exc())
                for job in jobs:  # those still running (the others have ended already)
                    self._guard(self.service.queue.fail, self.name, job, f"internal error: {type(exc).__name__}: {exc}")
                    self.service.events.done(job.id)
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
        while not self._stop.wait(self.service.settings.lease_s / 4):
            held = list(self.holding)
            if held:
                asked = self._guard(self.service.queue.renew, self.name, [j.id for j in held], self.service.settings.lease_s)
                for job_id in asked or ():
                    self.service.events.cancel(job_id)

    # --- one batch --------------------------------------------------------------------------------------------
    def run(self, jobs: list[Job]) -> None:
        """Run claimed jobs (equal batch keys) as one batch; each ends succeeded, failed or cancelled."""
        requests, runnable = [], []
        for job in jobs:
            try:
                requests.append(self.service.references.request(job.request))
                runnable.append(job)
            except KolorsError as exc:  # e.g. an upload removed since it was accepted
                self._end(job, "failed", lambda j, e=str(exc): self.service.queue.fail(self.name, j, e))
        if not runnable:
            return
        for job in runnable:
            self.service.events.started(job.id)
        tracker = _Progress(self, runnable, requests)
        started = time.perf_counter()
        try:
            results = self.pipe.generate_batch(requests, progress=False, on_step=tracker.step)
        except GenerationCancelled:
            for job in runnable:
                if self.service.events.is_cancelled(job.id):
                    self._end(job, "cancelled", lambda j: self.service.queue.cancelled(self.name, j, tracker.done))
                else:  # a batch partner was cancelled, or the server stops: back to the queue
                    self.service.queue.release(self.name, job)
                    self.service.events.done(job.id)
            return
        except KolorsError as exc:
            for job in runnable:
                self._end(job, "failed", lambda j, e=str(exc): self.service.queue.fail(self.name, j, e))
            return
        except Exception as exc:  # noqa: BLE001 - one bad job must not stop the worker
            log.error("worker %s: jobs %s failed:\n%s", self.name, [j.id for j in runnable], traceback.format_exc())
            message = f"internal error: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            for job in runnable:
                self._end(job, "failed", lambda j, m=message: self.service.queue.fail(self.name, j, m))
            return
        seconds = time.perf_counter() - started
        for job, result in zip(runnable, results, strict=True):
            records = []
            for i, (image, params) in enumerate(zip(result.images, result.parameters, strict=True)):
                self.service.storage.save_result(job.id, i, image, params)
                records.append({"seed": params["seed"], "parameters": params})
            self._end(job, "succeeded", lambda j, r=records: self.service.queue.succeed(self.name, j, r))
        self.service.metrics.generated(sum(len(r.images) for r in results), seconds, len(runnable))

    def _end(self, job: Job, status: str, record: Any) -> None:
        record(job)
        self.service.events.done(job.id)
        self.service.metrics.finished(status)
        ended = self.service.queue.get(job.id) if status != "succeeded" else None
        log.info(json.dumps({"job": job.id, "event": status, "worker": self.name, "attempt": job.attempts,
                             "seconds": round(time.time() - job.created, 3),
                             **({"error": ended.error} if ended is not None and ended.error else {})},
                            ensure_ascii=False))

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
        self.last_write = self.started  # the claim stored the start; progress goes to the database every 0.5 s
        self.done: int | None = None
        # the row where each job's images start, to preview its own first image
        self.first_rows, row = [], 0
        for request in requests:
            self.first_rows.append(row)
            row += request.num_images

    def step(self, info: Any) -> None:
        w = self.worker
        if w.stopping or any(w.service.events.is_cancelled(j.id) for j in self.jobs):
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
            if w.service.settings.previews and 0 <= local < rows and w.service.events.watched(job.id):
                preview = w.preview(info.latents[local : local + 1])
                if preview:
                    event["preview"] = preview
            w.service.events.progress(job.id, event)
        now = time.perf_counter()
        if now - self.last_write >= PROGRESS_EVERY_S:
            self.last_write = now
            asked = w._guard(w.service.queue.renew, w.name, [j.id for j in self.jobs], w.service.settings.lease_s,
                             {j.id: (step, steps, eta) for j in self.jobs})
            for job_id in asked or ():
                w.service.events.cancel(job_id)
