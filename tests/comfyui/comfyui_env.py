"""A Python environment for the vendored ComfyUI, kept apart from the project's own (see ENVIRONMENT.md).

ComfyUI imports torchvision; PyPI's torchvision is a CUDA build whose C extension cannot load next to the CPU
torch, and with it installed ``import kolors`` breaks in the same process. So ComfyUI gets a venv of its own,
made once per machine and reused (``~/.cache/kolors-tests/comfyui-<key>``; the key hashes everything it is made
from: the Python version, ComfyUI's requirements, this project's dependencies and this file's recipe):

1. the CPU torch (``torch==2.13.0``, the pinned wheel) and the torchvision built for it, without dependencies;
2. ComfyUI's ``requirements.txt`` without torch, torchvision and torchaudio (torchaudio is left out: transformers
   imports it when present and its CUDA build breaks ``import diffusers``), plus ``requests``;
3. this project (``pip install -e REPO[quant]``: its dependencies; the tests put ``REPO/src`` first on the path).

ComfyUI runs with :data:`SHIM` on its ``PYTHONPATH``: a ``sitecustomize`` defining the two torchvision operator
schemas its import needs. Creation takes a few minutes (downloads from PyPI); a file lock keeps two test runs from
building it at once, and a half-built environment (no ``complete`` marker) is rebuilt.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TORCH = "torch==2.13.0"
TORCHVISION = "torchvision==0.28.0"  # the release built against torch 2.13.0
LEFT_OUT = ("torch", "torchvision", "torchaudio")  # installed above, or not at all
EXTRA = ("requests",)
RECIPE = "1"  # bump to rebuild every cached environment
CACHE = Path(os.environ.get("KOLORS_TEST_CACHE", Path.home() / ".cache" / "kolors-tests"))
TARBALL_ENV = "KOLORS_COMFYUI_TARBALL"

SITECUSTOMIZE = '''\
"""Lets PyPI's CUDA torchvision import next to the CPU torch (its C operators stay unavailable)."""
import torch

_lib = torch.library.Library("torchvision", "DEF")
_lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
'''


def find_tarball() -> Path | None:
    """The vendored ComfyUI snapshot: $KOLORS_COMFYUI_TARBALL, else ``shared/vendor/ComfyUI-*.tar.gz`` in the
    repository or any folder above it (``../shared/vendor`` next to a checkout)."""
    if os.environ.get(TARBALL_ENV):
        return Path(os.environ[TARBALL_ENV])
    for folder in (REPO, *REPO.parents):
        found = sorted((folder / "shared" / "vendor").glob("ComfyUI-*.tar.gz"))
        if found:
            return found[-1]
    return None


def unpack(tarball: Path, destination: Path) -> Path:
    """The ComfyUI source folder unpacked from ``tarball`` under ``destination``."""
    with tarfile.open(tarball) as archive:
        archive.extractall(destination, filter="data")
    (root,) = [p for p in destination.iterdir() if (p / "main.py").is_file()]
    return root


def requirements(comfyui: Path) -> list[str]:
    """ComfyUI's requirements without the torch packages (installed separately) and comments."""
    wanted = []
    for line in (comfyui / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        name = line.split("=")[0].split(">")[0].split("<")[0].split("~")[0].strip().lower()
        if line and name not in LEFT_OUT:
            wanted.append(line)
    return [*wanted, *EXTRA]


def project_dependencies() -> list[str]:
    """What ``pip install -e REPO[quant]`` installs besides the project itself."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["quant"]]


def stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def environment(comfyui: Path, log: Callable[[str], None] = stderr_log) -> Path:
    """The venv for ``comfyui`` (made on first use, then reused; ``log`` tells about it); returns its folder."""
    key = hashlib.sha256("\n".join([RECIPE, sys.version, TORCH, TORCHVISION, *requirements(comfyui),
                                    *project_dependencies()]).encode()).hexdigest()[:12]
    venv = CACHE / f"comfyui-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"comfyui-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / "complete").is_file():
            _build(venv, comfyui, log)
    return venv


def _build(venv: Path, comfyui: Path, log: Callable[[str], None]) -> None:
    log(f"\n[comfyui tests] creating ComfyUI's environment in {venv} (once per machine; about 2 minutes of "
        "downloads from PyPI)")
    if venv.exists():
        shutil.rmtree(venv)  # an earlier build that did not finish (no 'complete' marker): ours to replace
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    steps = [
        [*pip, TORCH],
        [*pip, "--no-deps", TORCHVISION],
        [*pip, *requirements(comfyui)],
        [*pip, "-e", f"{REPO}[quant]"],
    ]
    pip_log = venv.parent / f"{venv.name}.log"
    with open(pip_log, "w") as out:
        for command in steps:
            if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode:
                tail = "\n".join(pip_log.read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(f"making ComfyUI's environment failed at `{' '.join(command[3:])}`:\n{tail}")
    shim = venv / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (venv / "complete").write_text("ok\n")
    log("[comfyui tests] ComfyUI's environment is ready")


def python(venv: Path) -> Path:
    return venv / "bin" / "python"


def shim(venv: Path) -> Path:
    return venv / "shim"


if __name__ == "__main__":  # python tests/comfyui/comfyui_env.py: build it ahead of the tests
    import tempfile

    tarball = find_tarball()
    if tarball is None:
        sys.exit("no vendored ComfyUI found (shared/vendor/ComfyUI-*.tar.gz)")
    with tempfile.TemporaryDirectory() as tmp:
        print(environment(unpack(tarball, Path(tmp))))
