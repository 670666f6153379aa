"""Property: whatever numbers and paths a user types, `kolors generate` and `kolors data shapes` either write valid
PNGs (exit 0) or say what is wrong in exactly one `kolors: error:` line (exit 2) and leave no file behind.

Bounded: a few dozen derandomized examples of tiny images (the built-in model at 1-2 steps), in-process.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from kolors.cli.main import main



def mostly(valid, invalid: list, weight: int = 6):
    """A value of ``valid`` ``weight`` times as often as each of ``invalid``: about a third of the examples make
    images, the others each hit some mistake."""
    valid_marker = object()
    choices = [valid_marker] * weight * len(invalid) + invalid
    return st.sampled_from(choices).flatmap(lambda v: valid if v is valid_marker else st.just(v))


SIDES = mostly(st.sampled_from([8, 16, 24, 32]), [0, -8, 12, 33, 4097, 10**9, 2**70])
NUMBERS = mostly(st.floats(0, 30), ["nan", "inf", "-inf", "1e309", "x", "", "-1", "1000"])
SEEDS = mostly(st.integers(-1, 2**32), [2**63 - 1, 2**63, 2**64, 2**64 + 1, -2, -(2**63)])
STEPS = mostly(st.sampled_from(["1", "2"]), ["0", "-1", "2.5", "1001", "1e3"])
COUNTS = mostly(st.sampled_from(["1", "2"]), ["0", "-3", "300", "two"])
BATCH = mostly(st.sampled_from([None, "1", "2"]), ["0", "x"])
OUTPUTS = mostly(st.sampled_from(["out/", "out/image.png", "out/deep/er/", "out/image.PNG", "out/noext"]),
                 ["out/image.jpg", "afile/x.png", "afile/", "/proc/kolors-property/x.png"])

def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(width=SIDES, height=SIDES, steps=STEPS, guidance=NUMBERS, seed=SEEDS, num_images=COUNTS, batch_size=BATCH,
       output=OUTPUTS)
def test_generate_makes_valid_pngs_or_fails_in_one_line(width, height, steps, guidance, seed, num_images,
                                                        batch_size, output):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "afile").write_text("not a folder")
        before = files(folder)
        argv = ["generate", "a red circle", "--width", str(width), "--height", str(height), "--steps", steps,
                "--guidance", str(guidance), "--seed", str(seed), "--num-images", num_images,
                *(["--batch-size", batch_size] if batch_size else []), "-o", output, "-q"]
        code, out, err = run_in(folder, argv)
        event(f"exit {code}")
        if code == 0:
            paths = [Path(line) for line in out.splitlines()]
            assert len(paths) == int(num_images), out
            for path in paths:
                with Image.open(folder / path) as image:
                    image.load()
                    assert image.format == "PNG" and image.size == (width, height)
            assert not [n for n in files(folder) - before if Path(n).name.startswith(".")], files(folder)
        else:
            assert code == 2, err
            assert len(err.splitlines()) == 1 and err.startswith("kolors: error: "), err
            assert files(folder) == before


def run_in(folder: Path, argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` run in ``folder`` with the built-in model; (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    cwd, model = os.getcwd(), os.environ.pop("KOLORS_MODEL", None)
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        os.chdir(cwd)
        if model is not None:
            os.environ["KOLORS_MODEL"] = model
    return code, out.getvalue(), err.getvalue()


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(num=mostly(st.sampled_from(["1", "3"]), ["0", "-1", "x", "1.5"]),
       size=mostly(st.sampled_from(["8", "16", "32"]), ["0", "-8", "4097", "100000", "abc"]),
       seed=mostly(st.integers(0, 2**64), ["-1", "-5", "1e3", ""]),
       output=mostly(st.sampled_from(["shapes", "new/deeper/shapes", "empty"]),
                     ["afile", "afile/shapes", "full", "/proc/kolors-property-shapes"]))
def test_data_shapes_writes_a_dataset_or_fails_in_one_line(num, size, seed, output):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "afile").write_text("not a folder")
        (folder / "empty").mkdir()
        (folder / "full").mkdir()
        (folder / "full" / "mine.txt").write_text("keep")
        before = files(folder)
        code, out, err = run_in(folder, ["data", "shapes", output, "-n", num, "--size", size, "--seed", str(seed),
                                         "-q"])
        event(f"exit {code}")
        if code == 0:
            written = folder / output
            rows = (written / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
            assert len(rows) == int(num)
            for image in (written / "images").iterdir():
                with Image.open(image) as im:
                    im.load()
                    assert im.size == (int(size), int(size))
            assert not [n for n in files(folder) - before if Path(n).name.startswith(".")]
        else:
            assert code == 2, err
            assert len(err.splitlines()) == 1 and err.startswith("kolors: error: "), err
            assert files(folder) == before
