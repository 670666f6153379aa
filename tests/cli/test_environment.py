"""What a command runs under: imports only when needed, --threads, one line on stderr, interrupts during start-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import kolors.cli.info
from kolors.cli.main import main
from kolors.signals import Terminated

ROOT = Path(__file__).resolve().parents[2]


def python(code: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, **kwargs)


def spawn(*argv, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("KOLORS_MODEL", None)
    return subprocess.Popen([sys.executable, "-m", "kolors", *map(str, argv)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_commands_that_need_no_model_import_neither_torch_nor_diffusers(tmp_path):
    from kolors.metadata import save_png
    from PIL import Image

    save_png(Image.new("RGB", (8, 8)), tmp_path / "a.png", {"prompt": "x", "seed": 1})
    done = python(f"""
import sys
from kolors.cli.main import build_parser, main
build_parser()
assert main(["info", {str(tmp_path / 'a.png')!r}, "--json"]) == 0
assert main(["data", "shapes", {str(tmp_path / 'shapes')!r}, "-n", "2", "--size", "32", "-q"]) == 0
assert main(["generate", "x", "--width", "abc"]) == 2
print(sorted({{"torch", "diffusers", "transformers", "bitsandbytes"}} & set(sys.modules)))
""")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_threads_option_sets_torch_and_the_environment_for_the_command_only(tmp_path, monkeypatch, capsys):
    seen = {}

    def spy(args):
        seen.update(omp=os.environ.get("OMP_NUM_THREADS"), torch=torch.get_num_threads())
        return 0

    monkeypatch.setattr(kolors.cli.info, "run", spy)
    before = (os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads())
    assert main(["info", "x.png", "--threads", "1"]) == 0
    assert seen == {"omp": "1", "torch": 1}
    assert (os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()) == before
    for bad in ("0", "abc", "100000"):
        assert main(["info", "x.png", "--threads", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("kolors: error: argument --threads") and len(err.splitlines()) == 1, err


def test_an_error_after_the_libraries_load_is_still_one_line(tmp_path):
    """bitsandbytes (in the test extra) logs a kernels warning when imported; no image command imports it."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not weights")
    process = spawn("generate", "a red circle", "--steps", "1", "--unet", notes, "-o", tmp_path / "x.png",
                     cwd=tmp_path)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 2, err
    assert err.splitlines() == [f"kolors: error: {notes} is not a weight file (neither safetensors nor a PyTorch "
                                "checkpoint): give the .safetensors file"]


@pytest.mark.parametrize("signum, status, line", [(signal.SIGINT, 130, "kolors: error: interrupted"),
                                                  (signal.SIGTERM, 143, "kolors: error: terminated")])
def test_an_interrupt_while_the_libraries_import_is_one_line(tmp_path, signum, status, line):
    process = spawn("generate", "a red circle", "--steps", "1", "-o", tmp_path / "x.png", cwd=tmp_path)
    time.sleep(0.6)  # past the interpreter's start: torch and diffusers are importing
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == status, err
    assert err.splitlines() == [line]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signal_error, status, line", [(KeyboardInterrupt, 130, "kolors: error: interrupted"),
                                                        (Terminated, 143, "kolors: error: terminated")])
def test_an_interrupt_a_library_wrapped_in_its_own_error_is_still_an_interrupt(monkeypatch, capsys, signal_error,
                                                                               status, line):
    """diffusers' lazy imports turn an exception raised while a module imports into a RuntimeError; when that
    exception was Ctrl-C or SIGTERM the command is interrupted, not failed 'unexpectedly'."""
    def run(args):
        try:
            raise signal_error()
        except KeyboardInterrupt as exc:
            raise RuntimeError("Failed to import diffusers.models.controlnets.controlnet because of the following "
                               "error (look up to see its traceback):\n") from exc

    monkeypatch.setattr(kolors.cli.info, "run", run)
    assert main(["info", "x.png"]) == status
    assert capsys.readouterr().err.splitlines() == [line]
