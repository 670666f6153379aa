"""Property-based fuzzing of the OpenAPI document (schemathesis, its command line): no input makes the server
answer 5xx, and it is still up afterwards."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from helpers.server_process import Server

EXAMPLES_PER_OPERATION = 6


def test_fuzzing_the_openapi_document_finds_no_server_error(tmp_path):
    # tiny limits: whatever valid job the fuzzer makes is quick
    srv = Server(tmp_path / "data", "--max-pixels", "4096", "--max-steps", "2", "--max-images", "1",
                 "--max-queue", "3", "--request-timeout", "60", "--no-previews", "--quiet")
    try:
        st = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
        run = subprocess.run(
            [st, "run", f"{srv.url}/openapi.json", "--checks", "not_a_server_error", "--phases", "examples,fuzzing",
             "-n", str(EXAMPLES_PER_OPERATION), "--seed", "1", "--generation-deterministic",
             "--request-timeout", "30", "--suppress-health-check", "all"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path)  # its cache stays out of the checkout
        report = run.stdout[-6000:] + run.stderr[-2000:]
        assert run.returncode == 0, report
        assert "passed" in report.lower()
        assert httpx.get(f"{srv.url}/health").json() == {"status": "ok"}
    finally:
        srv.stop()
