"""Retention: images of old jobs, then the oldest until the size limit holds, are removed (jobs answer 410);
old uploads no waiting job names are removed."""

from __future__ import annotations

import time
from dataclasses import replace

from PIL import Image

from kolors.server.database import connect
from kolors.server.jobqueue import JobQueue
from kolors.server.retention import Retention
from kolors.server.settings import ServerSettings
from kolors.server.storage import Storage
from kolors.server.uploads import Uploads


def _setup(tmp_path, **limits):
    settings = replace(ServerSettings(data_dir=tmp_path), **limits)
    queue = JobQueue(connect(f"sqlite:///{tmp_path / 'q.db'}"), 100)
    storage = Storage(tmp_path, settings.limits)
    uploads = Uploads(queue.engine, storage)
    return Retention(settings, queue, storage, uploads), queue, storage, uploads


def _finished_job(queue, storage, seed):
    job = queue.submit({"prompt": "x", "seed": seed}, "k", 1, "native")
    [claimed] = queue.claim("w", 1, 30)
    storage.save_result(job.id, 0, Image.new("RGB", (64, 64), (seed, 0, 0)), {"seed": seed})
    queue.succeed("w", claimed, [{"seed": seed, "parameters": {"seed": seed}}])
    return job.id


def test_old_results_are_removed_and_marked(tmp_path):
    retention, queue, storage, _ = _setup(tmp_path, retention_age_s=3600)
    old = _finished_job(queue, storage, 1)
    assert retention.sweep() == 0 and storage.result_path(old, 0).is_file()
    assert retention.sweep(now=time.time() + 7200) == 1
    assert not storage.result_path(old, 0).exists() and queue.get(old).expired


def test_the_oldest_results_go_first_until_the_size_limit_holds(tmp_path):
    retention, queue, storage, _ = _setup(tmp_path)
    jobs = [_finished_job(queue, storage, s) for s in range(3)]
    newest_two = storage.result_bytes(jobs[1]) + storage.result_bytes(jobs[2])
    retention.settings = replace(retention.settings, retention_bytes=newest_two)
    assert retention.sweep() == 1
    assert [queue.get(j).expired for j in jobs] == [True, False, False]


def test_old_uploads_are_removed_unless_a_waiting_job_names_them(tmp_path):
    import io

    retention, queue, storage, uploads = _setup(tmp_path, retention_age_s=10)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    kept, dropped = uploads.add(buffer.getvalue(), "a.png"), uploads.add(buffer.getvalue(), "b.png")
    queue.submit({"prompt": "x", "init_image": f"upload:{kept.id}"}, "k", 1, "native")
    retention.sweep(now=time.time() + 60)
    assert uploads.path(kept.id) is not None and uploads.get(dropped.id) is None
    assert not storage.upload_path(dropped.file).exists()
