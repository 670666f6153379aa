"""The ``kolors`` command on a tiny model: outputs and their metadata, reproduction, and one-line errors.

Commands run in-process through ``main()`` (fast); one test runs the installed console script.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import runpy
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kolors.cli import output
from kolors.cli.main import main
from kolors.metadata import format_parameters, read_parameters, save_png

FAST = ["--steps", "2", "--width", "32", "--height", "24"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im, dtype=np.int16)


def stored(path) -> dict:
    return read_parameters(path)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def model(tiny_kolors_diffusers, monkeypatch):
    monkeypatch.delenv("KOLORS_MODEL", raising=False)
    return tiny_kolors_diffusers


# --- outputs and metadata --------------------------------------------------------------------------------------
def test_generate_into_a_folder_with_numbered_names_and_metadata(model, tmp_path, capsys):
    out_dir = tmp_path / "out"
    old_umask = os.umask(0o022)
    try:
        code, out, err = run(capsys, "generate", "一个红色的圆形，白色背景", "--model", model, *FAST,
                             "--negative-prompt", "模糊", "--seed", 5, "--num-images", 2, "--output", out_dir)
    finally:
        os.umask(old_umask)
    assert code == 0, err
    assert out.splitlines() == [str(out_dir / "00000-5.png"), str(out_dir / "00001-6.png")]
    assert files(out_dir) == ["00000-5.png", "00001-6.png"]
    assert stat.S_IMODE((out_dir / "00000-5.png").stat().st_mode) == 0o644
    params = stored(out_dir / "00001-6.png")
    assert params["prompt"] == "一个红色的圆形，白色背景" and params["negative_prompt"] == "模糊"
    assert (params["seed"], params["steps"], params["width"], params["height"]) == (6, 2, 32, 24)
    assert params["model"] == str(model) and params["device"] == "cpu" and params["dtype"] == "float32"

    code, out, _ = run(capsys, "info", out_dir / "00001-6.png")
    assert code == 0
    assert out == format_parameters(params) + "\n"
    assert out.startswith("一个红色的圆形，白色背景\nNegative prompt: 模糊\n"
                          "Steps: 2, Sampler: Euler, CFG scale: 5.0, Seed: 6, Size: 32x24, Model: ")
    code, out, _ = run(capsys, "info", out_dir / "00001-6.png", "--json")
    assert json.loads(out) == params

    # a second run continues the numbering and never replaces a file
    code, out, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "--seed", 5, "-o", f"{out_dir}/")
    assert code == 0, err
    assert out.strip() == str(out_dir / "00002-5.png")


def test_numbered_names_skip_files_that_appear_meanwhile(model, tmp_path, capsys, monkeypatch):
    (tmp_path / "00000-5.png").write_bytes(b"someone else's")
    monkeypatch.setattr(output.OutputPlan, "_next_number", lambda self: 0)  # as if the file appeared after the scan
    code, out, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "--seed", 5, "-o", tmp_path)
    assert code == 0, err
    assert out.strip() == str(tmp_path / "00001-5.png")
    assert (tmp_path / "00000-5.png").read_bytes() == b"someone else's"


def test_file_output_default_folder_and_non_png_names(model, tmp_path, capsys, monkeypatch):
    code, out, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "--seed", 1, "-n", 2,
                         "-o", tmp_path / "cat.png")
    assert code == 0, err
    assert out.splitlines() == [str(tmp_path / "cat-0.png"), str(tmp_path / "cat-1.png")]
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "--seed", 3)
    assert code == 0, err
    assert out.strip() == str(Path("outputs") / "00000-3.png") and (tmp_path / "outputs" / "00000-3.png").is_file()
    code, out, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "-o", "cat.jpg")
    assert code == 2 and "use --output cat.png or a folder" in err and not (tmp_path / "cat.jpg").exists()


def test_batch_image_equals_single_run_and_from_image_reproduces(model, tmp_path, capsys):
    code, _, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "--seed", 5, "--num-images", 2,
                       "--batch-size", 2, "-o", tmp_path / "batch.png")
    assert code == 0, err
    run(capsys, "generate", "a cat", "--model", model, *FAST, "--seed", 6, "-o", tmp_path / "one.png")
    assert np.abs(pixels(tmp_path / "batch-1.png") - pixels(tmp_path / "one.png")).max() <= 1
    assert stored(tmp_path / "batch-1.png")["seed"] == 6

    code, out, err = run(capsys, "generate", "--from-image", tmp_path / "one.png", "-o", tmp_path / "again.png",
                         "--quiet")
    assert code == 0, err
    assert np.array_equal(pixels(tmp_path / "one.png"), pixels(tmp_path / "again.png"))
    assert stored(tmp_path / "again.png") == stored(tmp_path / "one.png")

    # explicit options win over the stored ones
    code, _, err = run(capsys, "generate", "--from-image", tmp_path / "one.png", "--steps", 3, "--seed", 9,
                       "-o", tmp_path / "changed.png")
    assert code == 0, err
    changed = stored(tmp_path / "changed.png")
    assert (changed["steps"], changed["seed"], changed["prompt"]) == (3, 9, "a cat")


def test_an_interrupted_run_keeps_the_batches_it_finished(model, tmp_path, capsys, monkeypatch):
    from kolors.pipelines.pipeline import Pipeline

    real, calls = Pipeline.generate, []

    def generate(self, request, **kwargs):
        calls.append((request.seed, request.num_images))
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C while the third batch is denoised
        return real(self, request, **kwargs)

    monkeypatch.setattr(Pipeline, "generate", generate)
    code, out, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "--num-images", 5, "--batch-size", 2,
                         "--seed", 11, "-o", tmp_path / "out", "-q")
    assert code == 130 and err.strip() == "kolors: error: interrupted"
    assert calls == [(11, 2), (13, 2), (15, 1)]
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert [stored(tmp_path / "out" / n)["seed"] for n in names] == [11, 12, 13, 14]
    assert out.split() == [str(tmp_path / "out" / n) for n in names]


def test_a_random_seed_is_said_and_each_image_records_its_own(model, tmp_path, capsys):
    code, out, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "--num-images", 3, "--batch-size", 2,
                         "-o", tmp_path / "out")
    assert code == 0, err
    said = re.search(r"seed (\d+) \(images use seeds (\d+)…(\d+)\)", err)
    assert said and int(said[2]) == int(said[1]) and int(said[3]) == int(said[1]) + 2, err
    seeds = [stored(Path(p))["seed"] for p in out.split()]
    assert seeds == [int(said[1]) + i for i in range(3)]


def test_from_image_of_an_a1111_text_only_png(model, tmp_path, capsys, monkeypatch):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a red circle\nSteps: 2, Sampler: Euler a, CFG scale: 4, Seed: 11, Size: 32x24, "
                                "Model: sdxl_base")
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.png", pnginfo=info)
    monkeypatch.setenv("KOLORS_MODEL", str(model))
    code, out, err = run(capsys, "generate", "--from-image", tmp_path / "a1111.png", "-o", tmp_path / "k.png")
    assert code == 0, err
    assert "warning: the model" in err and "sdxl_base" in err and "is not available here" in err
    params = stored(tmp_path / "k.png")
    assert (params["prompt"], params["scheduler"], params["guidance"], params["seed"]) == ("a red circle", "euler_a",
                                                                                          4.0, 11)
    assert params["model"] == str(model)
    code, out, _ = run(capsys, "info", tmp_path / "a1111.png")
    assert out.startswith("a red circle\nSteps: 2, Sampler: Euler a") and "Model: sdxl_base" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_from_image_made_on_a_gpu_falls_back_to_this_device(model, tmp_path, capsys):
    params = {"prompt": "a cat", "width": 32, "height": 24, "steps": 2, "guidance": 5.0, "seed": 1,
              "scheduler": "default", "model": str(model), "device": "cuda", "dtype": "float16"}
    save_png(Image.new("RGB", (32, 24)), tmp_path / "gpu.png", params)
    code, out, err = run(capsys, "generate", "--from-image", tmp_path / "gpu.png", "-o", tmp_path / "cpu.png")
    assert code == 0, err
    assert "made on cuda" in err
    assert (stored(tmp_path / "cpu.png")["device"], stored(tmp_path / "cpu.png")["dtype"]) == ("cpu", "float32")


def test_random_seed_is_printed_and_stored(model, tmp_path, capsys):
    code, out, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "--num-images", 2,
                         "-o", tmp_path / "r.png")
    assert code == 0, err
    seed = int(re.search(r"kolors: seed (\d+)", err)[1])
    assert [stored(tmp_path / f"r-{i}.png")["seed"] for i in range(2)] == [seed, seed + 1]
    # -1 asks for a new random seed, also over a stored one
    code, out, err = run(capsys, "generate", "--from-image", tmp_path / "r-0.png", "--seed", -1,
                         "-o", tmp_path / "s.png")
    assert code == 0, err
    assert stored(tmp_path / "s.png")["seed"] == int(re.search(r"kolors: seed (\d+)", err)[1])


def test_kolors_model_environment_variable(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KOLORS_MODEL", str(model))
    code, out, err = run(capsys, "generate", "a cat", *FAST, "--seed", 1, "-o", tmp_path / "e.png")
    assert code == 0, err
    assert stored(tmp_path / "e.png")["model"] == str(model)
    assert "built-in" not in err


def test_builtin_model_notice_is_printed_once(model, tmp_path, capsys, monkeypatch):
    import kolors.loading
    import kolors.loading.locate

    monkeypatch.setattr(kolors.loading, "EMBEDDED_MODEL_DIR", model)
    monkeypatch.setattr(kolors.loading.locate, "EMBEDDED_MODEL_DIR", model)
    code, out, err = run(capsys, "generate", "a cat", *FAST, "--seed", 1, "--num-images", 2,
                         "-o", tmp_path / "b.png")
    assert code == 0, err
    notes = [line for line in err.splitlines() if "built-in model" in line]
    assert len(notes) == 1 and "--model DIR" in notes[0] and "KOLORS_MODEL" in notes[0]
    code, out, err = run(capsys, "generate", "a cat", *FAST, "--seed", 1, "-o", tmp_path / "q.png", "--quiet")
    assert code == 0 and err == ""


def test_truncation_warning_names_the_dropped_tokens(model, tmp_path, capsys):
    from kolors.loading.components import load_tokenizer
    from kolors.diffusion.prompt import MAX_TOKENS, count_dropped_tokens

    prompt = " ".join(["red circle blue square yellow triangle"] * 80)
    dropped = count_dropped_tokens(load_tokenizer(model / "tokenizer"), prompt)
    assert dropped > 0 and len(prompt.split()) > MAX_TOKENS
    code, out, err = run(capsys, "generate", prompt, "--model", model, "--steps", 1, "--width", 16, "--height", 16,
                         "--seed", 0, "-o", tmp_path / "t.png", "--quiet")
    assert code == 0, err
    lines = [line for line in err.splitlines() if "dropped" in line]
    assert len(lines) == 1 and lines[0].startswith("kolors: warning: ")
    assert f"the last {dropped} tokens are dropped" in lines[0]


def test_logging_setup_is_undone_after_main(model, tmp_path, capsys):
    logger = logging.getLogger("kolors")
    before = (list(logger.handlers), logger.level, logger.propagate)
    run(capsys, "generate", "a cat", "--model", model, *FAST, "--seed", 0, "-o", tmp_path / "x.png")
    assert (list(logger.handlers), logger.level, logger.propagate) == before


def test_img2img_and_its_reproduction(model, tmp_path, capsys, monkeypatch):
    Image.fromarray(np.full((24, 32, 3), 200, np.uint8)).save(tmp_path / "in.png")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "img2img", "a cat", "--image", "in.png", "--strength", 0.5, "--model", model,
                         "--steps", 4, "--seed", 1, "-o", "o.png")
    assert code == 0, err
    params = stored(tmp_path / "o.png")
    assert params["strength"] == 0.5 and params["init_image"] == str(tmp_path / "in.png")
    code, out, err = run(capsys, "img2img", "--from-image", "o.png", "-o", "again.png")
    assert code == 0, err
    assert np.array_equal(pixels(tmp_path / "o.png"), pixels(tmp_path / "again.png"))
    code, out, err = run(capsys, "img2img", "a cat", "--model", model, "-o", "x.png")
    assert code == 2 and "needs an input image" in err


def test_lora_is_stored_and_replayed(model, tmp_path, capsys):
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from safetensors.torch import save_file

    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(model / "unet"))
    unet = inject_adapter_in_model(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"]), unet)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    save_file({f"unet.{k}": v.contiguous() for k, v in get_peft_model_state_dict(unet).items()},
              tmp_path / "style.safetensors")

    base = ["generate", "a cat", "--model", model, *FAST, "--seed", 2]
    assert run(capsys, *base, "-o", tmp_path / "plain.png")[0] == 0
    code, out, err = run(capsys, *base, "--lora", f"{tmp_path / 'style.safetensors'}:0.8", "-o", tmp_path / "l.png")
    assert code == 0, err
    params = stored(tmp_path / "l.png")
    assert [(x["name"], x["weight"], x["path"]) for x in params["loras"]] == [
        ("style", 0.8, str(tmp_path / "style.safetensors"))]
    assert 'Lora hashes: "style: ' in Image.open(tmp_path / "l.png").text["parameters"]
    # the hash `kolors info` shows is the record's, and the record's sha256 is the file's
    record = params["loras"][0]
    assert record["sha256"] == hashlib.sha256((tmp_path / "style.safetensors").read_bytes()).hexdigest()
    code, out, err = run(capsys, "info", tmp_path / "l.png")
    assert code == 0 and f'Lora hashes: "style: {record["hash"]}"' in out, out
    assert not np.array_equal(pixels(tmp_path / "plain.png"), pixels(tmp_path / "l.png"))

    code, out, err = run(capsys, "generate", "--from-image", tmp_path / "l.png", "-o", tmp_path / "again.png")
    assert code == 0, err
    assert np.array_equal(pixels(tmp_path / "l.png"), pixels(tmp_path / "again.png"))
    (tmp_path / "style.safetensors").unlink()
    code, out, err = run(capsys, "generate", "--from-image", tmp_path / "l.png", "-o", tmp_path / "without.png")
    assert code == 0 and "LoRA style" in err and "not found here" in err
    assert np.array_equal(pixels(tmp_path / "plain.png"), pixels(tmp_path / "without.png"))


# --- errors ----------------------------------------------------------------------------------------------------
def assert_one_line_error(code, err, message, status=2):
    assert code == status, err
    assert err.startswith("kolors: error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert message in err, err


@pytest.mark.parametrize("extra, message", [
    (["--width", "30"], "width 30 is not a multiple of 8: try 24"),
    (["--height", "0"], "argument --height: must be a positive integer, got 0"),
    (["--width", "-8"], "argument --width: must be a positive integer, got -8"),
    (["--width", "abc"], "argument --width: expected a whole number, got 'abc'"),
    (["--width", "100000"], "width 100000 is larger than 4096 pixels"),
    (["--steps", "0"], "argument --steps: must be a positive integer, got 0"),
    (["--steps", "5000"], "steps must be between 1 and 1000"),
    (["--guidance", "nan"], "guidance must be between 0 and 100"),
    (["--guidance-stop", "1.5"], "guidance-stop must be between 0 and 1, got 1.5"),
    (["--num-images", "100000"], "num-images must be between 1 and 256"),
    (["--seed", "-5"], "argument --seed: must be a non-negative integer"),
    (["--scheduler", "heun"], "argument --scheduler: invalid choice: 'heun'"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
    (["--unet", "/nonexistent/unet.safetensors"], "--unet file not found: /nonexistent/unet.safetensors"),
    (["--lora", "/nonexistent/style.safetensors:0.5"], "LoRA file not found: /nonexistent/style.safetensors"),
    (["--from-image", "/nonexistent/x.png"], "image not found: /nonexistent/x.png"),
    (["--output", "/proc/kolors-test/x.png"], "is not writable"),
])
def test_cheap_mistakes_fail_before_the_model_loads(model, tmp_path, capsys, no_model_loading, extra, message):
    code, out, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "-o", tmp_path / "x.png", *extra)
    assert_one_line_error(code, err, message)
    assert out == "" and files(tmp_path) == []


def test_no_prompt_and_unknown_command(capsys, no_model_loading):
    code, out, err = run(capsys, "generate")
    assert_one_line_error(code, err, "no prompt given")
    code, out, err = run(capsys, "paint", "x")
    assert_one_line_error(code, err, "invalid choice: 'paint'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_fails_before_loading(model, capsys, no_model_loading):
    code, out, err = run(capsys, "generate", "a cat", "--model", model, "--device", "cuda")
    assert_one_line_error(code, err, "no CUDA GPU is visible: use --device cpu")


def broken_copy(model: Path, tmp_path: Path, action) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    action(folder)
    return folder


def truncate_unet(folder: Path) -> None:
    f = folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    f.write_bytes(f.read_bytes()[:1000])


def corrupt_text_encoder(folder: Path) -> None:
    f = folder / "text_encoder" / "model-00002-of-00002.safetensors"
    f.write_bytes(b"\x00" * 64)


@pytest.mark.parametrize("breakage, message", [
    (lambda d: shutil.rmtree(d / "unet"), "the 'unet' component folder is missing"),
    (lambda d: (d / "model_index.json").unlink(), "model_index.json is missing"),
    (truncate_unet, "unet/diffusion_pytorch_model.fp16.safetensors is corrupt or truncated"),
    (corrupt_text_encoder, "text_encoder/model-00002-of-00002.safetensors is corrupt or truncated"),
])
def test_broken_model_folder_is_named(model, tmp_path, capsys, breakage, message):
    folder = broken_copy(model, tmp_path, breakage)
    code, out, err = run(capsys, "generate", "a cat", "--model", folder, *FAST, "-o", tmp_path / "x.png")
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "x.png").exists()


def test_missing_model_folder_and_file_instead_of_folder(tmp_path, capsys):
    code, out, err = run(capsys, "generate", "a cat", "--model", tmp_path / "nowhere", "-o", tmp_path / "x.png")
    assert_one_line_error(code, err, f"model folder not found: {tmp_path / 'nowhere'}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    code, out, err = run(capsys, "generate", "a cat", "--model", tmp_path / "model.safetensors")
    assert_one_line_error(code, err, "--model must be a model folder, not a file")


def test_hub_id_not_in_the_local_cache(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants as hf_constants

    empty = tmp_path / "hf"
    empty.mkdir()
    monkeypatch.setenv("HF_HOME", str(empty))
    monkeypatch.setenv("HF_HUB_CACHE", str(empty / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(empty / "hub"))  # read once, at import
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "generate", "a cat", "--model", "Kwai-Kolors/Kolors-diffusers")
    assert_one_line_error(code, err, "'Kwai-Kolors/Kolors-diffusers' is not in the local Hugging Face cache")
    assert files(tmp_path) == ["hf"]


def test_unwritable_output_leaves_nothing(model, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    code, out, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "-o", tmp_path / "a-file" / "x.png")
    assert_one_line_error(code, err, "a-file is a file")
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    try:
        if not os.access(readonly, os.W_OK):
            code, out, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "-o", readonly / "x.png")
            assert_one_line_error(code, err, "is not writable")
            assert files(readonly) == []
    finally:
        readonly.chmod(0o700)
    assert files(tmp_path) == ["a-file", "ro"]


def test_a_named_output_replaces_only_an_image_kolors_wrote(model, tmp_path, capsys):
    from PIL import Image

    code, _, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "--seed", 1, "-o", tmp_path / "cat.png")
    assert code == 0, err
    code, _, err = run(capsys, "generate", "a dog", "--model", model, *FAST, "--seed", 2, "-o", tmp_path / "cat.png")
    assert code == 0 and stored(tmp_path / "cat.png")["prompt"] == "a dog", err  # its own image: replaced
    Image.new("RGB", (10, 10), "blue").save(tmp_path / "holiday.png")
    (tmp_path / "pet-1.png").write_bytes(b"not even an image")
    for name, count in (("holiday.png", "1"), ("pet.png", "2")):
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
        code, _, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "-n", count, "-o", tmp_path / name)
        assert_one_line_error(code, err, "exists and kolors did not write it: choose another --output")
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written, nothing replaced


def test_failing_write_leaves_no_partial_file(model, tmp_path, capsys, monkeypatch):
    def disk_full(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    code, out, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "--seed", 1, "-o", tmp_path)
    assert_one_line_error(code, err, f"cannot write {tmp_path / '00000-1.png'}: No space left on device")
    assert out == "" and files(tmp_path) == []


def test_out_of_memory_suggests_offload(model, tmp_path, capsys, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    from kolors.cli.output import OutputPlan
    from kolors.pipelines.pipeline import Pipeline

    monkeypatch.setattr(Pipeline, "_denoise", oom)
    code, out, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "-o", tmp_path / "x.png")
    assert_one_line_error(code, err, "out of GPU memory while generating 32x24: try --offload")
    monkeypatch.undo()
    monkeypatch.setattr(OutputPlan, "save", oom)  # outside the pipeline's own guard
    (tmp_path / "l.safetensors").write_bytes(b"")
    code, out, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "--seed", 1, "-o", tmp_path / "x.png")
    assert_one_line_error(code, err, "out of GPU memory: try --offload")
    assert files(tmp_path) == ["l.safetensors"]


def test_interrupt_and_unexpected_errors(model, tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    from kolors.pipelines.pipeline import Pipeline

    monkeypatch.setattr(Pipeline, "_denoise", interrupt)
    code, out, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "-o", tmp_path / "x.png")
    assert_one_line_error(code, err, "interrupted", status=130)

    def bug(*args, **kwargs):
        raise RuntimeError("something odd\nsecond line")

    monkeypatch.setattr(Pipeline, "_denoise", bug)
    code, out, err = run(capsys, "generate", "a cat", "--model", model, *FAST, "-o", tmp_path / "x.png")
    assert_one_line_error(code, err, "unexpected RuntimeError: something odd (run with --debug", status=1)
    with pytest.raises(RuntimeError, match="something odd"):
        main(["generate", "a cat", "--model", str(model), *FAST, "-o", str(tmp_path / "x.png"), "--debug"])
    assert files(tmp_path) == []


def test_info_errors(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    code, out, err = run(capsys, "info", tmp_path / "a.jpg")
    assert_one_line_error(code, err, "is a JPEG file, not a PNG")
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    code, out, err = run(capsys, "info", tmp_path / "plain.png", "--json")
    assert_one_line_error(code, err, "holds no generation parameters")


def test_python_dash_m_kolors(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["kolors", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("kolors", run_name="__main__")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("kolors ")


def test_console_script_entry_point(model, tmp_path):
    exe = Path(sys.executable).parent / "kolors"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([str(exe), "generate", "一只猫", "--model", str(model), *FAST, "--seed", "3",
                           "-o", str(tmp_path / "s.png")], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{tmp_path / 's.png'}\n"
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr  # library chatter is silenced
    assert stored(tmp_path / "s.png")["prompt"] == "一只猫"
