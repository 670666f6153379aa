"""In-process notifications between the API handlers and the workers of one server.

The database is the truth about every job; this adds what is too frequent or too large for it: each step's
progress (with a small preview) of the jobs this process runs, cancellation flags that a worker checks after
every step, and wake-ups (a job was submitted; a job changed). Waiters on other servers poll the database.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class JobEvents:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress: dict[str, dict[str, Any]] = {}  # job id -> latest progress of a job running here
        self._cancelled: set[str] = set()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self.work = threading.Event()  # set when a job is submitted: idle workers look at the queue at once

    # --- workers ----------------------------------------------------------------------------------------------
    def started(self, job_id: str) -> None:
        with self._lock:
            self._progress[job_id] = {}
        self.changed(job_id)

    def progress(self, job_id: str, event: dict[str, Any]) -> None:
        with self._lock:
            self._progress[job_id] = event
        self.changed(job_id)

    def done(self, job_id: str) -> None:
        """The job ended here (its final state is in the database)."""
        with self._lock:
            self._progress.pop(job_id, None)
            self._cancelled.discard(job_id)
        self.changed(job_id)

    def is_cancelled(self, job_id: str) -> bool:
        return job_id in self._cancelled

    # --- handlers ---------------------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._progress:
                self._cancelled.add(job_id)

    def running_here(self) -> list[str]:
        with self._lock:
            return list(self._progress)

    def watched(self, job_id: str) -> bool:
        """Whether a handler is waiting on ``job_id`` (previews are made only then)."""
        return job_id in self._waiters

    def latest(self, job_id: str) -> dict[str, Any] | None:
        return self._progress.get(job_id)

    def changed(self, job_id: str) -> None:
        """Wake the handlers waiting on ``job_id`` (safe from any thread)."""
        with self._lock:
            waiters = list(self._waiters.get(job_id, ()))
        for loop, flag in waiters:
            try:
                loop.call_soon_threadsafe(flag.set)
            except RuntimeError:  # that loop has closed
                pass

    async def wait(self, job_id: str, timeout: float) -> None:
        """Until ``job_id`` changes here, or ``timeout`` seconds (then the caller polls the database)."""
        flag = asyncio.Event()
        entry = (asyncio.get_running_loop(), flag)
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(entry)
        try:
            await asyncio.wait_for(flag.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                waiters = self._waiters.get(job_id)
                if waiters is not None:
                    waiters.discard(entry)
                    if not waiters:
                        del self._waiters[job_id]
