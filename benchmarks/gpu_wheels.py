"""Make .whl/: the wheels the device machine lacks for benchmarks/gpu_all.py, and check that the run fits.

    python benchmarks/gpu_wheels.py        # in the checkout that the device run sends, before the `run` call

The device machine has torch 2.11 (CUDA 13), transformers, accelerate, peft and the rest of kolors' needs, but no
diffusers, torchao or bitsandbytes, and no network: they travel as wheels for its Python 3.12 on x86-64, in the
versions this machine has (the ones the --smoke test ran). bitsandbytes ships a kernel library for every CUDA
version (41 MB); only the CUDA 13 ones and the CPU one are kept. kolors itself travels as the working tree
(gpu_run.sh puts src/ on PYTHONPATH): a wheel of it would carry the 26 MB built-in model a second time. The
working tree plus the carried folder must stay under the device's 64 MiB.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".whl"
PACKAGES = ("diffusers", "torchao", "bitsandbytes")
DEVICE_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
KEEP_BNB = re.compile(r"bitsandbytes/libbitsandbytes_(cpu|cuda13\d)\.so$")
LIMIT_MIB = 64
MARGIN_MIB = 4


def download(name: str, version: str) -> Path:
    """The wheel of ``name==version`` for the device's Python and platform, in .whl/ (downloaded once)."""
    for old in WHEELS.glob(f"{name}-*.whl"):
        if not old.name.startswith(f"{name}-{version}-"):
            old.unlink()  # one version of each: two stop the install there
    found = list(WHEELS.glob(f"{name}-{version}-*.whl"))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           DEVICE_PYTHON, "--implementation", "cp", "-d", str(WHEELS), f"{name}=={version}"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd, check=True)
    return next(WHEELS.glob(f"{name}-{version}-*.whl"))


def slim_bitsandbytes(wheel: Path) -> None:
    """Drop the kernel libraries of other CUDA/ROCm/XPU versions (and their RECORD lines) from the wheel."""
    with zipfile.ZipFile(wheel) as src:
        names = src.namelist()
        dropped = {n for n in names
                   if n.endswith(".so") and n.startswith("bitsandbytes/lib") and not KEEP_BNB.search(n)}
        if not dropped:
            return
        tmp = wheel.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                if info.filename in dropped:
                    continue
                data = src.read(info)
                if info.filename.endswith(".dist-info/RECORD"):
                    data = b"".join(line for line in data.splitlines(keepends=True)
                                    if line.split(b",")[0].decode() not in dropped)
                dst.writestr(info, data)
    tmp.replace(wheel)


def travel_mib(carried: Path) -> float:
    """MiB that a device call sends: tracked and untracked-not-ignored files, plus the carried folder."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.split(b"\0")
    tree = sum((ROOT / n.decode()).stat().st_size for n in set(listed) if n and (ROOT / n.decode()).is_file())
    return (tree + sum(f.stat().st_size for f in carried.rglob("*") if f.is_file())) / 2**20


def main() -> int:
    WHEELS.mkdir(exist_ok=True)
    for name in PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            print(f"kolors: error: {name} is not installed here: install the project's [test] extra first")
            return 2
        wheel = download(name, version)
        if name == "bitsandbytes":
            slim_bitsandbytes(wheel)
        print(f"{wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB")
    total = travel_mib(WHEELS)
    print(f"working tree + .whl: {total:.1f} MiB (the device takes {LIMIT_MIB} MiB)")
    if total > LIMIT_MIB - MARGIN_MIB:
        print(f"kolors: error: {total:.1f} MiB would travel: keep it under {LIMIT_MIB - MARGIN_MIB} MiB")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
