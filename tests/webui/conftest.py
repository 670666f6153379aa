"""Browser tests of the web UI: a real ``kolors serve`` with the built-in model (one per session, on a free port)
and Debian's chromium driven by Playwright for Python.

Every page records the requests it makes; at the end of each test they must all have gone to the server's origin
(requests elsewhere are recorded and aborted, never sent). Screenshots of each step are kept under
``tests/webui/artifacts/<test>/`` (ignored by git). Without chromium or Playwright the browser tests are skipped
with the reason; ``.ci/run`` installs both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
VENDOR = Path(__file__).resolve().parent / "vendor"
SERVER_START_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running ``kolors serve`` (built-in model, CPU) and small helpers to call its API from the tests."""

    def __init__(self, url: str, process: subprocess.Popen, log: Path):
        self.url = url
        self.process = process
        self.log = log

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def read(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return response.read()

    def wait(self, job_id: str, timeout: float = 50) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.call("GET", f"/api/v1/jobs/{job_id}")
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish in {timeout} s")

    def generate(self, prompt: str, **settings) -> dict:
        """A finished job made through the API (4 steps unless told)."""
        job = self.call("POST", "/api/v1/jobs", {"prompt": prompt, "steps": 4, "seed": 1, **settings})
        return self.wait(job["id"])


@contextmanager
def running_server(folder: Path) -> Iterator[Server]:
    """``kolors serve`` with the built-in model on the CPU and a free port, its data and log in ``folder``; ends it
    when the block does (the browser tests' server, and tests/webui/screenshot.py's)."""
    port = _free_port()
    log = folder / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "kolors", "serve", "--port", str(port), "--data-dir", str(folder / "data"),
               "--device", "cpu", "--quiet"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_S
    try:
        while True:
            if process.poll() is not None:
                raise AssertionError(f"kolors serve exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/ready", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"kolors serve not ready after {SERVER_START_S} s")
            time.sleep(0.5)
        yield Server(url, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    pytest.importorskip("fastapi", reason="the server extra is not installed (pip install -e '.[test]')")
    with running_server(tmp_path_factory.mktemp("webui-server")) as running:
        yield running


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Debian's chromium is not installed ({CHROMIUM}): apt-get install -y chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Shots:
    """Numbered full-page screenshots of one test, kept as artefacts."""

    def __init__(self, folder: Path):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.folder = folder
        self.count = 0

    def __call__(self, page, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def shots(request) -> Shots:
    return Shots(ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name))


@pytest.fixture
def open_page(browser, server):
    """``open_page(locale=..., viewport=...)``: a fresh browser context on the UI, ready to use.

    The page's requests are recorded (``page.requests``); one to another origin is aborted, and at the end of
    the test every recorded request must have gone to the server. JavaScript errors fail the test too."""
    contexts, pages = [], []

    def opener(locale: str = "en-US", viewport: dict | None = None, wait: bool = True, storage: dict | None = None):
        # bypass_csp: the page's own Content-Security-Policy would hide a stray request from the recording (and
        # keeps axe-core out); the recording below is the check, test_mount checks the policy itself.
        context = browser.new_context(locale=locale, viewport=viewport or {"width": 1280, "height": 900},
                                      bypass_csp=True, accept_downloads=True)
        contexts.append(context)
        page = context.new_page()
        page.requests, page.errors = [], []

        def route(route):
            page.requests.append(route.request.url)
            if _same_origin(route.request.url, server.url):
                route.continue_()
            else:
                route.abort()

        context.route("**/*", route)
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        if storage:
            page.add_init_script("".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});"
                                         for k, v in storage.items()))
        if wait:
            page.goto(server.url + "/")
            page.wait_for_selector("body[data-ready=true]", timeout=30000)
        pages.append(page)
        return page

    yield opener
    try:
        for page in pages:
            assert page.errors == [], f"JavaScript errors: {page.errors}"
            foreign = [url for url in page.requests if not _same_origin(url, server.url)]
            assert foreign == [], f"requests left the server's origin: {foreign}"
    finally:
        for context in contexts:
            context.close()


def _same_origin(url: str, origin: str) -> bool:
    return url.startswith(("data:", "blob:")) or url == origin or url.startswith(origin + "/")


@pytest.fixture(scope="session")
def axe_source() -> str:
    return (VENDOR / "axe.min.js").read_text(encoding="utf-8")
