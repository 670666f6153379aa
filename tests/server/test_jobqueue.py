"""The database queue on its own (SQLite, no model): claims, batches, leases, crash recovery, the bound."""

from __future__ import annotations

import time

import pytest

from kolors.server.database import connect
from kolors.server.jobqueue import DIED, JobQueue, QueueFull


@pytest.fixture
def queue(tmp_path):
    return JobQueue(connect(f"sqlite:///{tmp_path / 'q.db'}"), max_queue=5)


def _submit(queue, key="a", n=1, prompt="x"):
    return queue.submit({"prompt": prompt}, key, n, "native")


def test_claims_take_the_oldest_job_and_its_batch_partners_in_order(queue):
    jobs = [_submit(queue, key) for key in ("a", "b", "a", "a", "b")]
    claimed = queue.claim("w1", max_images=2, lease_s=30)
    assert [j.id for j in claimed] == [jobs[0].id, jobs[2].id]  # same key, up to 2 images
    assert all(j.status == "running" and j.attempts == 1 and j.worker == "w1" for j in claimed)
    assert [j.id for j in queue.claim("w2", max_images=8, lease_s=30)] == [jobs[1].id, jobs[4].id]
    assert [j.id for j in queue.claim("w3", max_images=1, lease_s=30)] == [jobs[3].id]
    assert queue.claim("w4", max_images=8, lease_s=30) == []


def test_positions_and_the_bound(queue):
    jobs = [_submit(queue) for _ in range(5)]
    assert [queue.position(j) for j in jobs] == [0, 1, 2, 3, 4]
    with pytest.raises(QueueFull) as full:
        _submit(queue)
    assert full.value.retry_after >= 1 and "queue is full (5 jobs waiting)" in str(full.value)
    queue.claim("w", max_images=1, lease_s=30)
    assert queue.position(queue.get(jobs[1].id)) == 0
    _submit(queue)  # room again


def test_a_job_whose_worker_died_runs_once_more_then_fails_with_the_reason(queue):
    job = _submit(queue)
    queue.claim("host:1:0", max_images=1, lease_s=0.01)
    time.sleep(0.02)
    assert queue.recover() == 1
    assert queue.get(job.id).status == "queued" and queue.get(job.id).attempts == 1
    queue.claim("host:2:0", max_images=1, lease_s=0.01)
    time.sleep(0.02)
    queue.recover()
    final = queue.get(job.id)
    assert final.status == "failed" and final.error == DIED and final.attempts == 2


def test_renewed_leases_are_kept_and_dead_processes_are_taken_back_at_startup(queue):
    job = _submit(queue)
    queue.claim("w", max_images=1, lease_s=0.2)
    time.sleep(0.1)
    queue.renew("w", [job.id], lease_s=30, progress={job.id: (3, 10, 1.5)})
    time.sleep(0.15)
    assert queue.recover() == 0
    running = queue.get(job.id)
    assert running.status == "running" and (running.step, running.steps, running.eta_s) == (3, 10, 1.5)
    assert queue.recover(startup=True, dead=lambda worker: worker == "w") == 1
    assert queue.get(job.id).status == "queued"


def test_cancel_release_and_end(queue):
    a, b, c = _submit(queue), _submit(queue), _submit(queue)
    assert queue.cancel(c.id).status == "cancelled"
    claimed = queue.claim("w", max_images=8, lease_s=30)
    assert [j.id for j in claimed] == [a.id, b.id]
    queue.cancel(a.id)
    assert queue.renew("w", [a.id, b.id], 30) == {a.id}
    queue.cancelled("w", claimed[0], step=2)
    queue.release("w", claimed[1])
    assert queue.get(a.id).error == "cancelled at step 2"
    again = queue.get(b.id)
    assert again.status == "queued" and again.attempts == 0 and queue.position(again) == 0
    queue.succeed("other-worker", again, [])  # not its holder: no effect
    assert queue.get(b.id).status == "queued"
    assert queue.counts() == {"queued": 1, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 2}
