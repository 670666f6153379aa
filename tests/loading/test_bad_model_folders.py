"""Damaged, hand-edited or hostile model folders and weight files: one `kolors: error:` line naming what to fix.

Each case is a copy of the tiny Kolors folder with one thing changed, run through `kolors generate` (exit status 2,
one line, no traceback, no image, and never a hang while the model is built).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import sys
from pathlib import Path

import pytest
import torch

from kolors.cli.main import main


def set_key(relative, key, value):
    def edit(folder):
        path = folder / relative
        config = json.loads(path.read_text())
        config[key] = value
        path.write_text(json.dumps(config))
    return edit


def write(relative, text):
    def edit(folder):
        (folder / relative).write_text(text)
    return edit


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo kolors-test-ran-code > ran-code.txt",))


def pickle_that_runs_code(folder):
    for path in (folder / "unet").glob("*.safetensors"):
        path.unlink()
    torch.save({"conv_in.weight": RunsCode()}, folder / "unet" / "diffusion_pytorch_model.bin")


def legacy_pickle_that_runs_code(folder):
    for path in (folder / "unet").glob("*.safetensors"):
        path.unlink()
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(RunsCode(), protocol=2))


CASES = {
    "block_out_channels is text": (set_key("unet/config.json", "block_out_channels", "abc"),
                                   "unet/config.json: 'block_out_channels' must be a list of whole numbers"),
    "negative hidden size": (set_key("text_encoder/config.json", "hidden_size", -1),
                             "text_encoder/config.json: 'hidden_size' must be a whole number"),
    "a trillion layers": (set_key("text_encoder/config.json", "num_layers", 10**12),
                          "'num_layers' must be a whole number from 1 to 1024"),
    "huge UNet widths": (set_key("unet/config.json", "block_out_channels", [10**9] * 3),
                         "'block_out_channels' must be a list of whole numbers"),
    "latent channels in words": (set_key("vae/config.json", "latent_channels", "four"),
                                 "vae/config.json: 'latent_channels' must be a whole number"),
    "scheduler config is a list": (write("scheduler/scheduler_config.json", "[1, 2, 3]"),
                                   "must hold a JSON object (keys and values), not a list"),
    "negative timesteps": (set_key("scheduler/scheduler_config.json", "num_train_timesteps", -5),
                           "'num_train_timesteps' must be a whole number from 1"),
    "unknown scheduler": (set_key("scheduler/scheduler_config.json", "_class_name", "os.system"),
                          "unknown scheduler class 'os.system'"),
    "deeply nested config": (write("unet/config.json", "[" * 100_000 + "]" * 100_000), "nested too deeply"),
    "deeply nested index": (write("model_index.json", '{"a":' * 50_000 + "1" + "}" * 50_000),
                            "model_index.json: it is nested too deeply"),
    "text encoder config is a list": (write("text_encoder/config.json", "[]"), "not a list"),
    "defaults of the wrong type": (write("kolors_defaults.json", '{"width": "abc"}'),
                                   "kolors_defaults.json: 'width' must be a whole number"),
    "blocks that do not fit": (set_key("unet/config.json", "down_block_types", ["DownBlock2D"]),
                               "unet/config.json does not describe a UNet that can be built"),
    "pickle that runs code": (pickle_that_runs_code, "it is a pickle that would run code when read (posix.system)"),
    "legacy pickle that runs code": (legacy_pickle_that_runs_code, "it is a pickle that would run code when read"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_model_folder_is_one_line(case, tiny_kolors_diffusers, tmp_path, capsys, monkeypatch):
    edit, message = CASES[case]
    folder = tmp_path / "model"
    shutil.copytree(tiny_kolors_diffusers, folder)
    edit(folder)
    monkeypatch.chdir(tmp_path)
    code = main(["generate", "a cat", "--model", str(folder), "--steps", "1", "--width", "32", "--height", "32",
                 "-o", str(tmp_path / "out.png")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("kolors: error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert message in err, err
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "ran-code.txt").exists()


@pytest.mark.parametrize("option", ["--unet", "--text-encoder"])
@pytest.mark.parametrize("name, content, message", [
    ("notes.txt", b"hello, I am a text file\n", "is not a weight file (neither safetensors nor a PyTorch checkpoint)"),
    # fixed noise: os.urandom once began with a plausible safetensors header length and gave the other message
    ("notes.txt", b"\xff" + random.Random(0).randbytes(4095), "is not a weight file"),
    ("weights.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage", "is corrupt or truncated"),
])
def test_a_single_file_that_is_not_weights_is_one_line(option, name, content, message, tiny_kolors_diffusers,
                                                        tmp_path, capsys):
    path = tmp_path / name
    path.write_bytes(content)
    code = main(["generate", "a cat", "--model", str(tiny_kolors_diffusers), "--steps", "1", "--width", "32",
                 "--height", "32", option, str(path), "-o", str(tmp_path / "out.png")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_a_hub_id_not_in_the_cache_suggests_the_installed_download_command(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    code = main(["generate", "a cat", "--model", "Kwai-Kolors/Kolors-diffusers"])
    err = capsys.readouterr().err
    major, minor = (int(x) for x in huggingface_hub.__version__.split(".")[:2])
    command = "hf download" if (major, minor) >= (0, 34) else "huggingface-cli download"
    assert code == 2 and f"`{command} Kwai-Kolors/Kolors-diffusers`" in err, err
    assert (Path(sys.executable).parent / command.split()[0]).is_file()  # the script the package installed
