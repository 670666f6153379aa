"""The kolors command line on a tiny model: outputs, metadata, reproduction and one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kolors.cli.main import main

FAST = ["--steps", "3", "--width", "32", "--height", "24"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def test_generate_writes_pngs_with_parameters(tiny_kolors_diffusers, tmp_path, capsys):
    code, out, err = run(capsys, "generate", "一个红色的圆形", "--model", tiny_kolors_diffusers, *FAST,
                         "--seed", 5, "--num-images", 2, "--output", tmp_path)
    assert code == 0, err
    written = [Path(line) for line in out.split()]
    assert [p.name for p in written] == ["00000-5.png", "00001-6.png"]
    code, out, _ = run(capsys, "info", written[1])
    assert out.startswith("一个红色的圆形\nSteps: 3, Sampler: Euler, CFG scale: 5.0, Seed: 6, Size: 32x24")
    code, out, _ = run(capsys, "info", written[1], "--json")
    assert json.loads(out)["seed"] == 6


def test_batch_image_equals_single_run_and_from_image_reproduces(tiny_kolors_diffusers, tmp_path, capsys):
    run(capsys, "generate", "a cat", "--model", tiny_kolors_diffusers, *FAST, "--seed", 5, "--num-images", 2,
        "-o", tmp_path / "batch.png")
    run(capsys, "generate", "a cat", "--model", tiny_kolors_diffusers, *FAST, "--seed", 6, "-o", tmp_path / "one.png")
    assert np.abs(pixels(tmp_path / "batch-1.png") - pixels(tmp_path / "one.png")).max() <= 1
    code, _, err = run(capsys, "generate", "--from-image", tmp_path / "one.png", "-o", tmp_path / "again.png")
    assert code == 0, err
    assert np.array_equal(pixels(tmp_path / "one.png"), pixels(tmp_path / "again.png"))


def test_random_seed_is_printed_and_stored(tiny_kolors_diffusers, tmp_path, capsys):
    code, out, err = run(capsys, "generate", "a cat", "--model", tiny_kolors_diffusers, *FAST, "-o", tmp_path / "r.png")
    seed = int(err.split("seed ")[1].split()[0])
    assert json.loads(Image.open(tmp_path / "r.png").text["kolors"])["seed"] == seed


def test_kolors_model_environment_variable(tiny_kolors_diffusers, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KOLORS_MODEL", str(tiny_kolors_diffusers))
    code, out, err = run(capsys, "generate", "a cat", *FAST, "--seed", 1, "-o", tmp_path / "e.png")
    assert code == 0, err
    assert json.loads(Image.open(tmp_path / "e.png").text["kolors"])["model"] == str(tiny_kolors_diffusers)


def test_truncation_warning_is_one_readable_line(tiny_kolors_diffusers, tmp_path, capsys):
    prompt = " ".join(["red circle blue square yellow triangle"] * 80)
    code, out, err = run(capsys, "generate", prompt, "--model", tiny_kolors_diffusers, "--steps", 1, "--width", 16,
                         "--height", 16, "--seed", 0, "-o", tmp_path / "t.png")
    assert code == 0
    lines = [line for line in err.splitlines() if "dropped" in line]
    assert len(lines) == 1 and lines[0].startswith("kolors: warning: ")


def test_img2img_command(tiny_kolors_diffusers, tmp_path, capsys):
    Image.fromarray(np.full((24, 32, 3), 200, np.uint8)).save(tmp_path / "in.png")
    code, out, err = run(capsys, "img2img", "a cat", "--image", tmp_path / "in.png", "--strength", 0.5,
                         "--model", tiny_kolors_diffusers, "--steps", 4, "--seed", 1, "-o", tmp_path / "o.png")
    assert code == 0, err
    stored = json.loads(Image.open(tmp_path / "o.png").text["kolors"])
    assert stored["strength"] == 0.5 and stored["init_image"].endswith("in.png")
    assert Image.open(tmp_path / "o.png").size == (32, 24)


def broken_copy(src: Path, dst: Path, action) -> Path:
    shutil.copytree(src, dst)
    action(dst)
    return dst


def truncate_unet(folder: Path) -> None:
    f = next((folder / "unet").glob("*.safetensors"))
    f.write_bytes(f.read_bytes()[:1000])


@pytest.mark.parametrize("extra, message", [
    (["--width", "30"], "not a multiple of 8"),
    (["--width", "8192"], "larger than"),
    (["--height", "0"], "positive"),
    (["--steps", "0"], "positive"),
    (["--steps", "5000"], "steps must be between"),
    (["--scheduler", "heun"], "invalid choice"),
    (["--device", "tpu"], "invalid choice"),
    (["--model", "/nonexistent/model"], "model folder not found"),
    (["--model", "Kwai-Kolors/Not-Cached-Here"], "not in the local Hugging Face cache"),
])
def test_bad_input_gives_one_line_and_exit_2(tiny_kolors_diffusers, tmp_path, capsys, extra, message, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    argv = ["generate", "a cat", "--model", tiny_kolors_diffusers, *FAST, "-o", tmp_path / "x.png", *extra]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("breakage, message", [
    (lambda d: shutil.rmtree(d / "unet"), "'unet' component folder is missing"),
    (truncate_unet, "diffusion_pytorch_model.fp16.safetensors"),
])
def test_broken_model_folder_is_named(tiny_kolors_diffusers, tmp_path, capsys, breakage, message):
    folder = broken_copy(tiny_kolors_diffusers, tmp_path / "m", breakage)
    code, out, err = run(capsys, "generate", "a cat", "--model", folder, *FAST, "--dtype", "float16",
                         "-o", tmp_path / "x.png")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_unwritable_output_leaves_nothing(tiny_kolors_diffusers, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    code, out, err = run(capsys, "generate", "a cat", "--model", tiny_kolors_diffusers, *FAST,
                         "-o", tmp_path / "a-file" / "sub" / "x.png")
    assert code == 2 and "cannot create output folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_out_of_memory_suggests_memory_options(tiny_kolors_diffusers, tmp_path, capsys, monkeypatch):
    from kolors.pipelines import text_to_image

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(text_to_image.Text2ImagePipeline, "_denoise", oom)
    code, out, err = run(capsys, "generate", "a cat", "--model", tiny_kolors_diffusers, *FAST, "-o", tmp_path / "x.png")
    assert code == 2 and "out of GPU memory" in err and "--offload" in err
    assert not (tmp_path / "x.png").exists()


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="not found"):
        main(["generate", "a cat", "--model", str(tmp_path / "nowhere"), "--debug"])


def test_console_script_entry_point(tiny_kolors_diffusers, tmp_path):
    exe = Path(sys.executable).parent / "kolors"
    proc = subprocess.run([str(exe), "generate", "一只猫", "--model", str(tiny_kolors_diffusers), *FAST, "--seed", "3",
                           "-o", str(tmp_path / "s.png"), "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "s.png")
    bad = subprocess.run([str(exe), "generate", "x", "--width", "30"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("kolors: error:") and "Traceback" not in bad.stderr
