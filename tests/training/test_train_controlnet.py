"""`kolors train` in controlnet mode on a tiny model: it learns, its folder loads everywhere, it resumes exactly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from PIL import Image
from safetensors.torch import load_file, save_file

from kolors.adapters.controlnet import load_controlnet
from kolors.cli.main import main
from kolors import Control, ControlNetPipeline
from kolors.training.controlnet_model import FP16_WEIGHTS_FILE, WEIGHTS_FILE


def _args(model, data, output, *extra: str) -> list[str]:
    return ["train", "--model", str(model), "--data", str(data), "--output", str(output), "--quiet",
            "--mode", "controlnet", *extra]


LIGHT = ["--steps", "30", "--batch-size", "4", "--lr", "3e-3", "--set", "controlnet_blocks=light",
         "--set", "caption_dropout=0", "--set", "checkpoint_every=100"]


@pytest.fixture(scope="module")
def light_run(train_model, shapes_control, tmp_path_factory):
    out = tmp_path_factory.mktemp("controlnet_run")
    assert main(_args(train_model, shapes_control, out, *LIGHT)) == 0
    return out


def test_training_lowers_the_loss_and_moves_the_weights(light_run):
    summary = json.loads((light_run / "summary.json").read_text())
    print(f"evaluation loss {summary['initial_loss']:.4f} -> {summary['final_loss']:.4f}")
    assert summary["final_loss"] < 0.95 * summary["initial_loss"], summary
    weights = load_file(light_run / "controlnet" / WEIGHTS_FILE)
    zero_convs = [v for k, v in weights.items() if k.startswith(("controlnet_down_blocks.", "controlnet_mid_block."))]
    assert zero_convs and all(v.abs().max() > 0 for v in zero_convs)  # the zero convolutions have grown
    log = [json.loads(line) for line in (light_run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 31))


def test_folder_loads_in_diffusers_and_kolors_and_steers_generation(train_model, light_run, shapes_control):
    folder = light_run / "controlnet"
    assert {p.name for p in folder.iterdir()} == {"config.json", WEIGHTS_FILE, FP16_WEIGHTS_FILE}
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == "ControlNetModel"
    assert (config["encoder_hid_dim_type"], config["addition_embed_type"]) == ("text_proj", "text_time")
    assert config["down_block_types"] == ["DownBlock2D", "DownBlock2D"] and config["mid_block_type"] == "UNetMidBlock2D"
    theirs = ControlNetModel.from_pretrained(folder)
    half = ControlNetModel.from_pretrained(folder, variant="fp16", torch_dtype=torch.float16)
    unet = UNet2DConditionModel.from_pretrained(train_model / "unet")
    ours = load_controlnet(folder, "cpu", torch.float32, unet=unet, vae_scale_factor=2)
    for name, value in ours.state_dict().items():
        assert torch.equal(value, theirs.state_dict()[name]), name
        assert torch.equal(value.half(), half.state_dict()[name]), name

    pipe = ControlNetPipeline.from_pretrained(train_model, device="cpu", dtype="float32",
                                              controlnets={"canny": folder})
    row = json.loads((shapes_control / "metadata.jsonl").read_text().splitlines()[0])
    photo = Image.open(shapes_control / row["file_name"])

    def generate(controls):
        return pipe(row["text"], controls=controls, steps=3, seed=1, progress=False).pixels[0]

    plain, steered = generate([]), generate([Control("canny", photo, scale=1.0)])
    assert plain.shape == steered.shape and np.abs(plain - steered).mean() > 1e-3


def test_full_controlnet_copies_the_unet_encoder(train_model, shapes_control, tmp_path):
    out = tmp_path / "full"
    assert main(_args(train_model, shapes_control, out, "--steps", "2", "--batch-size", "2",
                      "--set", "controlnet_blocks=full", "--set", "conditioning_channels=[8, 16]")) == 0
    config = json.loads((out / "controlnet" / "config.json").read_text())
    unet = UNet2DConditionModel.from_pretrained(train_model / "unet")
    assert config["down_block_types"] == list(unet.config.down_block_types)
    assert config["conditioning_embedding_out_channels"] == [8, 16]
    load_controlnet(out / "controlnet", "cpu", torch.float32, unet=unet, vae_scale_factor=2)


def test_resumed_run_matches_the_uninterrupted_one(train_model, shapes_control, tmp_path):
    options = [*LIGHT[2:], "--set", "checkpoint_every=3", "--set", "keep_checkpoints=null"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(_args(train_model, shapes_control, straight, "--steps", "6", *options)) == 0
    assert main(_args(train_model, shapes_control, resumed, "--steps", "3", *options)) == 0
    shutil.rmtree(resumed / "controlnet")
    assert main(_args(train_model, shapes_control, resumed, "--steps", "6", *options, "--resume", "latest")) == 0
    a, b = load_file(straight / "controlnet" / WEIGHTS_FILE), load_file(resumed / "controlnet" / WEIGHTS_FILE)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"max |resumed - uninterrupted| = {diff:.3g}")
    assert a.keys() == b.keys() and diff <= 1e-6
    log = [json.loads(line)["step"] for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert log == list(range(1, 7))


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("kolors: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_data_without_conditioning_images_is_a_one_line_error(train_model, shapes_metadata, shapes_txt,
                                                                shapes_control, tmp_path, capsys):
    assert main(_args(train_model, shapes_metadata, tmp_path / "a", "--steps", "1")) == 2
    err = _one_line(capsys)
    assert str(shapes_metadata / "metadata.jsonl") in err and "line 1 has no 'conditioning_image'" in err
    assert main(_args(train_model, shapes_txt, tmp_path / "b", "--steps", "1")) == 2
    assert "ControlNet training needs " + str(shapes_txt / "metadata.jsonl") in _one_line(capsys)

    broken = tmp_path / "broken"
    shutil.copytree(shapes_control, broken)
    (broken / "conditioning" / "003.png").unlink()
    assert main(_args(train_model, broken, tmp_path / "c", "--steps", "1")) == 2
    err = _one_line(capsys)
    assert "line 4: conditioning image not found" in err and "003.png" in err
    assert main(_args(train_model, shapes_control, tmp_path / "d", "--steps", "1",
                      "--set", "conditioning_channels=[8, 16, 32]")) == 2
    assert "'conditioning_channels' needs 2 widths" in _one_line(capsys)


def test_controlnet_scale_trains_the_residuals_at_that_scale(train_model, light_run, shapes_control, tmp_path):
    """Training at controlnet_scale s sees what scale 1.0 sees with the output convolutions multiplied by s."""
    trained = light_run / "controlnet"
    halved = tmp_path / "halved"
    shutil.copytree(trained, halved)
    weights = load_file(trained / WEIGHTS_FILE)
    outputs = ("controlnet_down_blocks.", "controlnet_mid_block.")
    save_file({k: v * 0.5 if k.startswith(outputs) else v for k, v in weights.items()}, str(halved / WEIGHTS_FILE))
    (halved / FP16_WEIGHTS_FILE).unlink()

    def initial_loss(folder, scale: float) -> float:
        out = tmp_path / f"{folder.name}-{scale}"
        assert main(_args(train_model, shapes_control, out, "--steps", "1", *LIGHT[2:6], "--set",
                          f"controlnet_from={folder}", "--set", f"controlnet_scale={scale}")) == 0
        return json.loads((out / "summary.json").read_text())["initial_loss"]

    at_half, halved_at_one, full = initial_loss(trained, 0.5), initial_loss(halved, 1.0), initial_loss(trained, 1.0)
    print(f"evaluation loss: scale 0.5 {at_half:.6f}, halved outputs at 1.0 {halved_at_one:.6f}, scale 1.0 {full:.6f}")
    assert at_half == pytest.approx(halved_at_one, rel=1e-5)
    assert abs(at_half - full) > 1e-3 * full


def test_controlnet_scale_must_be_positive(train_model, shapes_control, tmp_path, capsys):
    assert main(_args(train_model, shapes_control, tmp_path / "out", "--steps", "1",
                      "--set", "controlnet_scale=0")) == 2
    assert "'controlnet_scale' must be positive, got 0" in _one_line(capsys)
