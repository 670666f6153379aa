"""The job queue in the database: submit, claim with a lease, renew, finish, cancel, and take back the jobs of
workers that died.

A claim takes the oldest queued job and the queued jobs with the same batch key after it (up to a number of
images), marks them running for this worker with a lease, and counts an attempt. The worker renews the lease
while it runs; a job whose lease ran out (its worker was killed) goes back to the queue once, and fails with the
reason the second time. PostgreSQL claims with ``FOR UPDATE SKIP LOCKED`` so that servers sharing one database
never take the same job; SQLite's immediate transactions do the same on one machine.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select, text, update

from .database import jobs

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINAL = (SUCCEEDED, FAILED, CANCELLED)
MAX_ATTEMPTS = 2  # a job whose worker died is run once more
DIED = "the server running this job stopped (killed or crashed) twice while generating it; not retried again"


class QueueFull(Exception):
    """The queue holds its maximum of waiting jobs."""

    def __init__(self, size: int, retry_after: int) -> None:
        super().__init__(f"the queue is full ({size} jobs waiting): retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Job:
    """One row of the jobs table."""

    seq: int
    id: str
    status: str
    api: str
    request: dict[str, Any]
    batch_key: str
    num_images: int
    attempts: int
    worker: str | None
    lease_until: float | None
    cancel_requested: bool
    step: int | None
    steps: int | None
    eta_s: float | None
    created: float
    started: float | None
    finished: float | None
    error: str | None
    results: list[dict[str, Any]] | None
    expired: bool

    @classmethod
    def from_row(cls, row: Any) -> Job:
        data = dict(row._mapping)
        data["request"] = json.loads(data["request"])
        data["results"] = json.loads(data["results"]) if data["results"] else None
        data["cancel_requested"] = bool(data["cancel_requested"])
        data["expired"] = bool(data["expired"])
        return cls(**data)

    @property
    def final(self) -> bool:
        return self.status in FINAL


def worker_name(index: int) -> str:
    """``host:pid:index``: who holds a job (a restarted server recognises its dead predecessor's jobs)."""
    return f"{socket.gethostname()}:{os.getpid()}:{index}"


def _dead_here(worker: str | None) -> bool:
    """Whether ``worker`` was a process on this machine that no longer runs (or this very, new, process)."""
    host, _, rest = (worker or "").partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class JobQueue:
    def __init__(self, engine: Engine, max_queue: int) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self.postgres = engine.dialect.name == "postgresql"
        self._durations: list[float] = []  # recent job run times, for Retry-After

    # --- clients ----------------------------------------------------------------------------------------------
    def submit(self, request: dict[str, Any], batch_key: str, num_images: int, api: str) -> Job:
        """Add a job (raises :class:`QueueFull`); it is in the database when this returns."""
        job_id = "job_" + secrets.token_hex(10)
        with self.engine.begin() as conn:
            if self.postgres:  # one submitter at a time counts the queue (servers share it)
                conn.execute(text("SELECT pg_advisory_xact_lock(7860)"))
            waiting = conn.execute(select(func.count()).where(jobs.c.status == QUEUED)).scalar_one()
            if waiting >= self.max_queue:
                raise QueueFull(waiting, self.retry_after(waiting))
            conn.execute(jobs.insert().values(
                id=job_id, status=QUEUED, api=api, request=json.dumps(request, ensure_ascii=False),
                batch_key=batch_key, num_images=num_images, attempts=0, cancel_requested=False, expired=False,
                created=time.time()))
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).one()
        return Job.from_row(row)

    def retry_after(self, waiting: int) -> int:
        average = sum(self._durations) / len(self._durations) if self._durations else 5.0
        return max(1, min(600, math.ceil(average * max(1, waiting) / 4)))

    def get(self, job_id: str) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        return Job.from_row(row) if row is not None else None

    def position(self, job: Job) -> int | None:
        """How many queued jobs are ahead of ``job`` (0: it runs next); None unless it is queued."""
        if job.status != QUEUED:
            return None
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).where(jobs.c.status == QUEUED, jobs.c.seq < job.seq)
                                ).scalar_one()

    def list(self, statuses: Iterable[str] | None = None, limit: int = 50, before: str | None = None) -> list[Job]:
        """Jobs, newest first, optionally of some statuses and older than the job ``before``."""
        query = select(jobs).order_by(jobs.c.seq.desc()).limit(limit)
        if statuses:
            query = query.where(jobs.c.status.in_(list(statuses)))
        with self.engine.connect() as conn:
            if before is not None:
                seq = conn.execute(select(jobs.c.seq).where(jobs.c.id == before)).scalar()
                if seq is None:
                    return []
                query = query.where(jobs.c.seq < seq)
            return [Job.from_row(r) for r in conn.execute(query)]

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all()
        return {status: 0 for status in STATUSES} | {status: n for status, n in rows}

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once; ask a running one to stop (its worker stops at the next step)."""
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == QUEUED)
                         .values(status=CANCELLED, finished=now, error="cancelled before it started"))
            conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == RUNNING)
                         .values(cancel_requested=True))
        return self.get(job_id)

    # --- workers ----------------------------------------------------------------------------------------------
    def claim(self, worker: str, max_images: int, lease_s: float) -> list[Job]:
        """The oldest queued job and the queued jobs after it with the same batch key (up to ``max_images``
        images in all), now running for ``worker``."""
        now = time.time()
        with self.engine.begin() as conn:
            first = conn.execute(self._queued().limit(1)).first()
            if first is None:
                return []
            chosen, images = [first.seq], first.num_images
            if max_images > first.num_images:
                for row in conn.execute(self._queued().where(jobs.c.batch_key == first.batch_key,
                                                             jobs.c.seq > first.seq).limit(max_images)):
                    if images + row.num_images > max_images:
                        break
                    chosen.append(row.seq)
                    images += row.num_images
            conn.execute(update(jobs).where(jobs.c.seq.in_(chosen), jobs.c.status == QUEUED).values(
                status=RUNNING, worker=worker, lease_until=now + lease_s, attempts=jobs.c.attempts + 1,
                started=now, step=None, steps=None, eta_s=None))
            rows = conn.execute(select(jobs).where(jobs.c.seq.in_(chosen), jobs.c.worker == worker,
                                                   jobs.c.status == RUNNING).order_by(jobs.c.seq)).all()
        return [Job.from_row(r) for r in rows]

    def _queued(self):
        query = select(jobs.c.seq, jobs.c.batch_key, jobs.c.num_images).where(jobs.c.status == QUEUED
                                                                              ).order_by(jobs.c.seq)
        return query.with_for_update(skip_locked=True) if self.postgres else query

    def renew(self, worker: str, job_ids: list[str], lease_s: float,
              progress: dict[str, tuple[int, int, float | None]] | None = None) -> set[str]:
        """Extend the lease of ``worker``'s jobs (and store their progress); returns the ids asked to cancel."""
        if not job_ids:
            return set()
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id.in_(job_ids), jobs.c.worker == worker,
                                            jobs.c.status == RUNNING).values(lease_until=now + lease_s))
            for job_id, (step, steps, eta) in (progress or {}).items():
                conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.worker == worker)
                             .values(step=step, steps=steps, eta_s=eta))
            rows = conn.execute(select(jobs.c.id).where(jobs.c.id.in_(job_ids), jobs.c.cancel_requested)).all()
        return {r.id for r in rows}

    def succeed(self, worker: str, job: Job, results: list[dict[str, Any]]) -> None:
        self._end(worker, job, SUCCEEDED, results=json.dumps(results, ensure_ascii=False, default=str))

    def fail(self, worker: str, job: Job, error: str) -> None:
        self._end(worker, job, FAILED, error=error)

    def cancelled(self, worker: str, job: Job, step: int | None = None) -> None:
        self._end(worker, job, CANCELLED, error=f"cancelled at step {step}" if step is not None else "cancelled")

    def _end(self, worker: str, job: Job, status: str, **values: Any) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job.id, jobs.c.worker == worker,
                                            jobs.c.status == RUNNING)
                         .values(status=status, finished=now, lease_until=None, **values))
        if job.started is not None and status == SUCCEEDED:
            self._durations = (self._durations + [now - job.started])[-20:]

    def release(self, worker: str, job: Job) -> None:
        """Put a claimed job back at its place in the queue, not counting the attempt (a batch partner was
        cancelled)."""
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job.id, jobs.c.worker == worker, jobs.c.status == RUNNING)
                         .values(status=QUEUED, worker=None, lease_until=None, started=None,
                                 attempts=jobs.c.attempts - 1, step=None, steps=None, eta_s=None))

    def recover(self, startup: bool = False, dead: Callable[[str | None], bool] = _dead_here) -> int:
        """Take back running jobs whose lease ran out (at startup also those of dead processes on this machine):
        queued again after one such death, failed after two. Returns how many were taken back."""
        now = time.time()
        with self.engine.begin() as conn:
            query = select(jobs.c.seq, jobs.c.worker, jobs.c.attempts, jobs.c.lease_until).where(
                jobs.c.status == RUNNING)
            if self.postgres:
                query = query.with_for_update(skip_locked=True)
            taken = [r for r in conn.execute(query)
                     if (r.lease_until is not None and r.lease_until < now) or (startup and dead(r.worker))]
            for r in taken:
                values = dict(status=QUEUED, worker=None, lease_until=None, started=None, step=None, steps=None,
                              eta_s=None) if r.attempts < MAX_ATTEMPTS else dict(
                    status=FAILED, error=DIED, finished=now, lease_until=None)
                conn.execute(update(jobs).where(jobs.c.seq == r.seq, jobs.c.status == RUNNING).values(**values))
        return len(taken)

    def expire(self, job_ids: list[str]) -> None:
        """Mark jobs whose result files retention removed."""
        if job_ids:
            with self.engine.begin() as conn:
                conn.execute(update(jobs).where(jobs.c.id.in_(job_ids)).values(expired=True))

    def finished_before(self, cutoff: float, limit: int = 500) -> list[Job]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(jobs).where(jobs.c.status == SUCCEEDED, jobs.c.expired.is_(False),
                                                   jobs.c.finished < cutoff).order_by(jobs.c.seq).limit(limit))
            return [Job.from_row(r) for r in rows]
