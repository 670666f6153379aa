"""Every fenced code block of README.md and docs/*.md runs as written: what a new user copies must work.

``bash`` and ``python`` blocks run, in order, in one scratch folder per document (the repository's ``configs/``
linked in), against the built-in model, with the ``kolors`` command of this environment. A block that cannot run
on a CPU machine without downloads says so on a first line ``# needs: gpu``, ``# needs: real weights`` (a published
Kolors folder), ``# needs: network`` (installs packages), ``# needs: long run`` (a recipe of many minutes) or ``# needs: comfyui``
(a ComfyUI install): those are skipped. ``# needs: a running server`` blocks run against ``kolors serve`` (the
built-in model) started by the test on the documented port, 7860. ``# slow`` marks a block that runs only with ``pytest -m slow``. Output, trees and synopses are
```` ```text ```` blocks, which are not run; a fence without a language fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = {"bash": "bash", "sh": "bash", "python": "python"}
SHOWN = {"text", "yaml", "toml", "json"}
NEEDS = re.compile(r"^#\s*needs:\s*(.+)$")
FENCE = re.compile(r"^```(\S*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
TIMEOUT_S = 600
SERVER = "a running server"  # such blocks run against `kolors serve` started here on the documented port
SERVER_PORT = 7860


@dataclass(frozen=True)
class Block:
    document: Path
    line: int
    language: str
    code: str

    @property
    def markers(self) -> list[str]:
        """The ``# needs: …`` and ``# slow`` lines at the top of the block."""
        found = []
        for line in self.code.splitlines():
            if not line.startswith("#"):
                break
            found.append(line.strip())
        return found

    @property
    def needs(self) -> list[str]:
        """What the block needs: ``# needs: gpu, real weights`` -> ["gpu", "real weights"]."""
        return [need.split(" (")[0].strip() for line in self.markers if (m := NEEDS.match(line))
                for need in re.sub(r"\(.*?\)", "", m[1]).split(",")]

    @property
    def slow(self) -> bool:
        return "# slow" in self.markers

    def __str__(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            found.append(Block(document, text[:m.start()].count("\n") + 1, m[1], m[2]))
    return found


def _params() -> list:
    params = []
    for block in blocks():
        if block.language not in RUN:
            continue
        marks = [pytest.mark.slow] if block.slow else []
        unmet = [n for n in block.needs if n != SERVER]  # a server is started for the block
        if unmet:
            marks.append(pytest.mark.skip(reason=f"needs {', '.join(unmet)}"))
        params.append(pytest.param(block, id=str(block), marks=marks))
    return params


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """One scratch folder per document (its blocks build on each other), with configs/ linked in."""
    folders: dict[Path, Path] = {}

    def folder(document: Path) -> Path:
        if document not in folders:
            folders[document] = tmp_path_factory.mktemp(document.stem)
            (folders[document] / "configs").symlink_to(ROOT / "configs")
        return folders[document]

    return folder


def test_every_fence_names_its_language():
    unnamed = [str(b) for b in blocks() if b.language not in RUN and b.language not in SHOWN]
    assert not unnamed, f"fences without a known language (use ```text for output and synopses): {unnamed}"


def test_markers_are_known():
    known = {"gpu", "real weights", "network", "long run", "a running server", "comfyui"}
    unknown = [(str(b), n) for b in blocks() for n in b.needs if n not in known]
    assert not unknown, f"unknown '# needs:' markers (use {sorted(known)}): {unknown}"


@pytest.mark.parametrize("block", _params())
def test_block_runs_as_written(block: Block, scratch):
    env = {k: v for k, v in os.environ.items() if k != "KOLORS_MODEL"}  # the built-in model, as on a fresh install
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this environment's kolors
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    command = (["bash", "-euo", "pipefail", "-c", block.code] if RUN[block.language] == "bash"
               else [sys.executable, "-c", block.code])
    with contextlib.ExitStack() as stack:
        if SERVER in block.needs:
            stack.enter_context(_kolors_serve(scratch(block.document), env))
        done = subprocess.run(command, cwd=scratch(block.document), env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{block} failed ({done.returncode}):\n{done.stderr[-3000:]}"


@contextlib.contextmanager
def _kolors_serve(folder: Path, env: dict[str, str]):
    """``kolors serve`` with the built-in model on the documented port, ready, for the block's requests."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", SERVER_PORT)) == 0:
            pytest.skip(f"port {SERVER_PORT} is taken by another program: the block's requests would go there")
    server = subprocess.Popen([sys.executable, "-m", "kolors.cli.main", "serve", "--port", str(SERVER_PORT),
                               "--data-dir", str(folder / "kolors-data"), "--quiet"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{SERVER_PORT}/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"kolors serve did not get ready: {server.stderr.read()[-2000:]}")
            time.sleep(0.5)
        yield
    finally:
        server.terminate()
        server.wait(30)
