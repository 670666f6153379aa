"""Two servers on one PostgreSQL database (a real server from Debian's ``postgresql`` package, started here):
every job done exactly once, and the jobs of a killed server finished by the other once their lease expires."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy

from helpers.server_process import Server, free_port, wait_job


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


@pytest.fixture(scope="module")
def postgres_url():
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="kolors-pg-"))  # not under pytest's 0700 folder: postgres reads it
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the database as the package's postgres user
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = folder / "data"
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "kolors", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=120)
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
                    f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder} "
                    "-c fsync=off", "start"], check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql://kolors@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def two_servers(postgres_url, tmp_path_factory):
    shared = tmp_path_factory.mktemp("shared") / "data"  # one --data-dir (shared storage) for both
    args = ("--database", postgres_url, "--lease", "3", "--quiet")
    servers = [Server(shared, *args, wait=False) for _ in range(2)]
    for srv in servers:
        srv.wait_ready()
    yield servers
    for srv in servers:
        srv.stop()


def _rows(url: str) -> dict[str, tuple]:
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text("SELECT id, status, attempts, worker FROM jobs")).all()
    engine.dispose()
    return {r.id: (r.status, r.attempts, r.worker) for r in rows}


def test_two_servers_share_one_queue_and_do_each_job_once(two_servers, postgres_url):
    clients = [httpx.Client(base_url=s.url, timeout=30) for s in two_servers]
    ids = []
    for i in range(30):
        for k, c in enumerate(clients):
            answer = c.post("/api/v1/jobs", json={"prompt": f"job {i}", "seed": i, "steps": 2, "width": 64,
                                                  "height": 64 + 8 * k})
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
    jobs = [wait_job(clients[n % 2], j, timeout=120) for n, j in enumerate(ids)]
    assert all(j["status"] == "succeeded" for j in jobs)
    rows = _rows(postgres_url)
    assert all(rows[j][1] == 1 for j in ids)  # claimed once each
    pids = {rows[j][2].split(":")[1] for j in ids}
    assert pids == {str(s.process.pid) for s in two_servers}  # both servers worked
    for c in clients:
        c.close()


def test_the_jobs_of_a_killed_server_are_finished_by_the_other_after_the_lease(two_servers, postgres_url):
    a, b = two_servers
    with httpx.Client(base_url=a.url, timeout=30) as c:
        long_ids = [c.post("/api/v1/jobs", json={"prompt": "long", "seed": s, "steps": 40, "width": 64 + 8 * s,
                                                  "height": 64}).json()["id"] for s in range(2)]
        deadline = time.monotonic() + 60
        holder = None
        while time.monotonic() < deadline and holder is None:
            rows = _rows(postgres_url)
            holder = next((rows[j] for j in long_ids if rows[j][0] == "running"), None)
            time.sleep(0.05)
        assert holder is not None
    victim = a if holder[2].split(":")[1] == str(a.process.pid) else b
    survivor = b if victim is a else a
    running = [j for j in long_ids if _rows(postgres_url)[j][2] == holder[2]]
    victim.kill()
    killed = time.monotonic()
    with httpx.Client(base_url=survivor.url, timeout=30) as c:
        jobs = [wait_job(c, j, timeout=120) for j in long_ids]
    assert all(j["status"] == "succeeded" for j in jobs)
    rows = _rows(postgres_url)
    for j in running:
        assert rows[j][1] == 2 and rows[j][2].split(":")[1] == str(survivor.process.pid)
    assert time.monotonic() - killed >= 3  # taken back only after the 3 s lease
