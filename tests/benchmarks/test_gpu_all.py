"""benchmarks/gpu_all.py: the one GPU command of issue 17 runs end to end at toy sizes on the CPU (``--smoke``),
so that a GPU session is never spent on a crash; failures and the deadline are rows, never a lost run."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_all  # noqa: E402
from gpu_session import Clock, Results, Session  # noqa: E402


def smoke(tmp_path: Path, parts: str) -> tuple[list[dict], str]:
    """Run ``gpu_all.py --smoke --parts PARTS``; its rows (JSON lines) and its Markdown."""
    out = tmp_path / "out"
    cmd = [sys.executable, str(BENCHMARKS / "gpu_all.py"), "--smoke", "--parts", parts, "--out", str(out),
           "--work", str(tmp_path / "work")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=170,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = (out / "gpu_all.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["header"]["settings"].startswith("SMOKE")
    rows = [json.loads(x) for x in lines[1:]]
    errors = [r for r in rows if r["status"] != "ok" and r["status"] != "skipped"]
    assert proc.returncode == 0 and not errors, (errors, proc.stdout[-3000:], proc.stderr[-3000:])
    return rows, (out / "gpu_all.md").read_text()


def value(rows: list[dict], part: str, what: str) -> str:
    return next(r["value"] for r in rows if r["part"] == part and r["what"].startswith(what))


def test_smoke_parts_1_to_3_measure_ours_against_diffusers_and_the_modes(tmp_path):
    rows, md = smoke(tmp_path, "1,2,3")
    assert value(rows, "1", "ours eager vs diffusers eager, same seed") == "inf dB / 1.0000"  # same weights, pixels
    assert float(value(rows, "1", "s/image, ours exact eager")) > 0
    assert "TFLOP/s" in next(r["note"] for r in rows if r["what"].startswith("UNet step, ours compiled"))
    assert float(value(rows, "2", "low-memory vs exact eager").split()[0]) > 40  # int8 text encoder: small change
    assert value(rows, "2", "sequential: text encoder weights") == "streamed"
    assert "dpmpp_2m" in next(r["note"] for r in rows if r["what"] == "fast mode: s/image")
    skipped = {r["what"]: r["note"] for r in rows if r["status"] == "skipped"}
    assert "fp8 needs CUDA compute capability" in skipped["per-row fp8 (bf16) on every linear layer"]
    assert "low-memory: int8 text encoder moved to the device for encoding and back" in skipped
    for part in ("Part 1: exact mode", "Part 2: low-memory", "Part 3: fast mode"):
        assert f"## {part}" in md


def test_smoke_part_4_measures_batches_and_a_cold_process(tmp_path):
    rows, _ = smoke(tmp_path, "4")
    assert value(rows, "4", "s/image falls with each larger batch") in ("yes", "no")
    loaded, first = map(float, value(rows, "4", "cold start: start -> loaded").split(" / "))
    assert 0 < loaded <= first


def test_smoke_part_6_runs_the_recipe(tmp_path):
    rows, md = smoke(tmp_path, "6")
    assert value(rows, "6", "exit / wall time").startswith("0 / ")
    assert value(rows, "6", "result") == "complete"
    assert (tmp_path / "out" / "recipe.log").read_text().strip()
    # The exported model comes back as chunks of a tar, each under the device's 16 MiB per file.
    chunks = sorted((tmp_path / "out").glob("recipe-model.tar.*"))
    assert chunks and value(rows, "6", "model") == " ".join(c.name for c in chunks)
    whole = b"".join(c.read_bytes() for c in chunks)
    assert hashlib.sha256(whole).hexdigest() == next(r["sha256"] for r in rows if r["what"] == "model")
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        tar.extractall(tmp_path / "back", filter="data")
    assert json.loads((tmp_path / "back" / "model" / "model_index.json").read_text())["_class_name"]
    assert "## Part 6: the built-in model's recipe" in md


def test_a_folder_packed_for_the_trip_back_is_split_and_whole_again(tmp_path):
    import gpu_parts

    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    payload = os.urandom(2500)
    (model / "unet" / "weights.bin").write_bytes(payload)
    (tmp_path / "out").mkdir()
    for k in range(40):  # a longer pack from an earlier run into the same folder
        (tmp_path / "out" / f"m.tar.{k:02d}").write_bytes(b"old")
    (tmp_path / "out" / "m.tar.notes").write_text("the user's")  # not a piece: kept
    chunks, digest = gpu_parts.pack_folder(model, tmp_path / "out" / "m.tar", chunk_bytes=1000)
    assert (tmp_path / "out" / "m.tar.notes").read_text() == "the user's"
    (tmp_path / "out" / "m.tar.notes").unlink()
    assert [c.name for c in chunks] == [f"m.tar.{k:02d}" for k in range(len(chunks))] and len(chunks) >= 3
    assert max(c.stat().st_size for c in chunks) <= 1000
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [c.name for c in chunks]  # no whole tar left
    whole = b"".join(c.read_bytes() for c in chunks)
    assert hashlib.sha256(whole).hexdigest() == digest
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        tar.extractall(tmp_path / "back", filter="data")
    assert (tmp_path / "back" / "model" / "unet" / "weights.bin").read_bytes() == payload


def test_smoke_part_5_trains_both_ways(tmp_path):
    rows, _ = smoke(tmp_path, "5")
    assert float(value(rows, "5", "lora: s/step")) > 0 and float(value(rows, "5", "full: s/step")) > 0
    assert value(rows, "5", "full: run").startswith("full, 64², batch 2")
    assert not list((tmp_path / "work" / "training").glob("train-*"))  # trained weights are not left behind


def driver(tmp_path: Path, parts: dict, seconds: float = 60.0) -> list[dict]:
    args = gpu_all.parse_args(["--smoke", "--out", str(tmp_path), "--work", str(tmp_path)])
    clock = Clock(seconds)
    results = Results(tmp_path, {"device": "test"}, {k: v[0] for k, v in parts.items()}, clock)
    session = Session(args, clock, results)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gpu_all, "PARTS", parts)
        gpu_all.run_parts(session, list(parts))
    return results.rows


def test_a_failing_part_is_recorded_with_its_traceback_and_the_next_part_runs(tmp_path):
    def boom(s):
        s.results.add("1", "before the failure", "1.0")
        raise RuntimeError("CUBLAS_STATUS_NOT_SUPPORTED somewhere")

    def out_of_time(s):
        s.clock.need(10_000, "a long compile")

    rows = driver(tmp_path, {"1": ("fails", boom), "2": ("runs out of time", out_of_time),
                             "3": ("works", lambda s: s.results.add("3", "figure", "2.0"))})
    by_part = {p: [(r["what"], r["status"]) for r in rows if r["part"] == p] for p in "123"}
    assert by_part["1"][:2] == [("before the failure", "ok"), ("failed", "error")]
    assert by_part["2"][0] == ("stopped", "deadline")
    assert by_part["3"][0] == ("figure", "ok")
    failed = next(r for r in rows if r["status"] == "error")
    assert failed["value"] == "RuntimeError: CUBLAS_STATUS_NOT_SUPPORTED somewhere"
    assert "raise RuntimeError" in failed["traceback"]
    md = (tmp_path / "gpu_all.md").read_text()
    assert "**error**: RuntimeError" in md and "raise RuntimeError" in md
    assert "a long compile needs about 10000 s" in next(r["note"] for r in rows if r["status"] == "deadline")
    # every row reached the JSON lines file as it came
    assert len((tmp_path / "gpu_all.jsonl").read_text().splitlines()) == len(rows) + 1


def test_parts_past_the_deadline_are_recorded_as_not_started(tmp_path):
    ran = []
    rows = driver(tmp_path, {"1": ("a", ran.append), "2": ("b", ran.append)}, seconds=0)
    assert not ran
    assert [(r["part"], r["what"], r["status"]) for r in rows if r["status"] != "ok"] == [
        ("1", "not started", "deadline"), ("2", "not started", "deadline")]


def test_unknown_parts_are_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_all.parse_args(["--parts", "1,9"])
    assert exc.value.code == 2
    assert "unknown part(s) 9: choose from 1, 2, 3, 4, 5, 6" in capsys.readouterr().err


def test_the_recipe_is_found_under_its_current_module_name_or_given():
    import gpu_parts

    cmd = gpu_parts.recipe_command(None)
    assert cmd[:2] == [sys.executable, "-m"] and cmd[2] in gpu_parts.RECIPE_MODULES
    assert gpu_parts.recipe_command("python -m kolors.recipe") == ["python", "-m", "kolors.recipe"]


def test_slim_bitsandbytes_keeps_the_cuda13_and_cpu_libraries_and_their_record(tmp_path):
    import gpu_wheels

    wheel = tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    libs = ["cpu", "cuda121", "cuda128", "cuda130", "cuda132", "rocm64"]
    with zipfile.ZipFile(wheel, "w") as z:
        for lib in libs:
            z.writestr(f"bitsandbytes/libbitsandbytes_{lib}.so", b"x")
        z.writestr("bitsandbytes/__init__.py", b"")
        record = "".join(f"bitsandbytes/libbitsandbytes_{lib}.so,sha256=x,1\n" for lib in libs)
        z.writestr("bitsandbytes-0.50.2.dist-info/RECORD", record + "bitsandbytes/__init__.py,,\n")
    gpu_wheels.slim_bitsandbytes(wheel)
    with zipfile.ZipFile(wheel) as z:
        kept = sorted(n for n in z.namelist() if n.endswith(".so"))
        record = z.read("bitsandbytes-0.50.2.dist-info/RECORD").decode()
    assert kept == [f"bitsandbytes/libbitsandbytes_{lib}.so" for lib in ("cpu", "cuda130", "cuda132")]
    assert "cuda128" not in record and "cuda130" in record and "__init__.py" in record
