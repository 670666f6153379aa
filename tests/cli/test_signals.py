"""Real SIGINT and SIGTERM sent to `kolors generate` at random moments of a many-image run.

Whatever the moment - start-up (imports, loading), denoising, or while PNGs are written (UNet calls and writes
are slowed down here so that the signal lands inside them) - the process exits with 130 (SIGINT) or 143 (SIGTERM) and one
stderr line, and the output folder holds only complete images: no partial or temporary file.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
# The kolors command, instrumented: every PNG write takes 0.3 s longer (after the bytes are written, before the
# rename), and every UNet call 0.05 s longer, the first one touching the file named by KOLORS_TEST_DENOISING. The
# UNet class is patched by a thread once diffusers is imported, so that the command imports what it would anyway.
INSTRUMENTED = """
import os, sys, threading, time
from PIL import Image
real_save = Image.Image.save
def slow_save(self, fp, *args, **kwargs):
    real_save(self, fp, *args, **kwargs)
    time.sleep(0.3)
Image.Image.save = slow_save
def patch_unet():
    name = "diffusers.models.unets.unet_2d_condition"
    while sys.modules.get(name) is None or not hasattr(sys.modules[name], "UNet2DConditionModel"):
        time.sleep(0.005)
    cls = sys.modules[name].UNet2DConditionModel
    real_forward = cls.forward
    def forward(self, *args, **kwargs):
        open(os.environ["KOLORS_TEST_DENOISING"], "a").close()
        time.sleep(0.05)
        return real_forward(self, *args, **kwargs)
    cls.forward = forward
threading.Thread(target=patch_unet, daemon=True).start()
from kolors.cli.main import main
sys.exit(main(sys.argv[1:]))
"""
LINES = {signal.SIGINT: (130, "kolors: error: interrupted"), signal.SIGTERM: (143, "kolors: error: terminated")}


def start(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
           "KOLORS_TEST_DENOISING": str(out.parent / "denoising")}
    env.pop("KOLORS_MODEL", None)
    argv = ["generate", "a red circle", "--num-images", "6", "--batch-size", "2", "--steps", "4", "--seed", "5",
            "-o", f"{out}/", "-q"]
    return subprocess.Popen([sys.executable, "-c", INSTRUMENTED, *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_first_image(process: subprocess.Popen) -> None:
    line = process.stdout.readline()  # a path is printed after each image is written
    assert line, process.stderr.read()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", ["start-up", "denoising", "saving"])
def test_a_signal_at_any_moment_leaves_only_complete_images(tmp_path, signum, moment):
    rng = random.Random(f"{moment}-{signum}")
    out = tmp_path / "out"
    process = start(out)
    t0 = time.monotonic()
    if moment == "start-up":
        time.sleep(rng.uniform(0.3, 2.0))
    elif moment == "denoising":
        while not (tmp_path / "denoising").exists():
            assert process.poll() is None, process.stderr.read()
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5))
    else:
        wait_for_first_image(process)
        time.sleep(rng.uniform(0.0, 0.25))  # inside the next, slowed-down write
    elapsed = time.monotonic() - t0
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    status, line = LINES[signum]
    if process.returncode == 0:  # the run finished first: nothing to check about the signal
        pytest.skip(f"the run ended before the signal at {elapsed:.1f} s")
    assert process.returncode == status, err
    assert err.splitlines() == [line]
    names = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert all(re.fullmatch(r"\d{5}-\d+\.png", name) for name in names), names  # no hidden temporary file
    for name in names:
        with Image.open(out / name) as image:
            image.load()  # complete: decodes to the end
    if moment == "saving":
        assert 1 <= len(names) < 6
