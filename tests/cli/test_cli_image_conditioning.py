"""``kolors inpaint`` / ``outpaint``, ``--control`` and ``--pag-scale`` on tiny models: outputs, metadata, replay,
and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from PIL import Image

from helpers.tiny_kolors import write_tiny_kolors
from kolors.cli.main import main
from kolors.metadata import read_parameters, read_png_text

W, H = 32, 24
FAST = ["--steps", "2", "--seed", "4", "--quiet"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im, dtype=np.int16)


@pytest.fixture(scope="module")
def inpainting_model(tmp_path_factory):
    return write_tiny_kolors(tmp_path_factory.mktemp("tiny_inpainting_cli"), "diffusers", seed=0, inpainting=True)


@pytest.fixture
def model(tiny_kolors_diffusers, monkeypatch):
    monkeypatch.delenv("KOLORS_MODEL", raising=False)
    return tiny_kolors_diffusers


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.RandomState(0)
    Image.fromarray((rng.rand(H, W, 3) * 255).astype(np.uint8)).save(folder / "photo.png")
    m = np.zeros((H, W), np.uint8)
    m[4:16, 8:24] = 255
    Image.fromarray(m).save(folder / "mask.png")
    Image.fromarray(m[: H // 2]).save(folder / "small_mask.png")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


@pytest.fixture(scope="module")
def controlnet_dir(tiny_kolors_diffusers, tmp_path_factory):
    unet = UNet2DConditionModel.from_pretrained(tiny_kolors_diffusers / "unet", variant="fp16",
                                                torch_dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    folder = tmp_path_factory.mktemp("cn") / "Kolors-ControlNet-Canny"
    net.save_pretrained(folder)
    return folder


def test_inpaint_keeps_the_unmasked_pixels_stores_and_replays(inpainting_model, inputs, tmp_path, capsys,
                                                              monkeypatch):
    monkeypatch.delenv("KOLORS_MODEL", raising=False)
    out = tmp_path / "a.png"
    code, _, err = run(capsys, "inpaint", "一只红色的猫", "--model", inpainting_model, "--image",
                       inputs / "photo.png", "--mask", inputs / "mask.png", "--feather", 2, "--pag-scale", 2,
                       *FAST, "-o", out)
    assert code == 0, err
    got, src = pixels(out), pixels(inputs / "photo.png")
    keep = np.ones((H, W), bool)
    keep[2:18, 6:26] = False  # the mask widened by the feather
    assert got.shape == src.shape and np.abs(got - src)[keep].max() <= 1
    params = read_parameters(out)
    assert params["mask"] == str(inputs / "mask.png") and params["init_image"] == str(inputs / "photo.png")
    assert (params["feather"], params["strength"], params["pag_scale"], params["pag_layers"]) == (2, 0.999, 2.0,
                                                                                                  ["mid"])
    again = tmp_path / "b.png"
    code, _, err = run(capsys, "inpaint", "--from-image", out, "--quiet", "-o", again)
    assert code == 0, err
    assert np.array_equal(pixels(again), got)


def test_outpaint_expand_and_extend(model, inputs, tmp_path, capsys):
    out = tmp_path / "o.png"
    code, _, err = run(capsys, "outpaint", "群山", "--model", model, "--image", inputs / "photo.png",
                       "--expand", 4, "--feather", 0, *FAST, "-o", out)
    assert code == 0, err
    got = pixels(out)
    assert got.shape == (H + 8, W + 8, 3)  # 4 on every side, then right/bottom grown to multiples of 8
    assert np.abs(got[4 : 4 + H, 4 : 4 + W] - pixels(inputs / "photo.png")).max() <= 1
    assert read_parameters(out)["extend"] == [4, 4, 4, 4]
    code, _, err = run(capsys, "outpaint", "群山", "--model", model, "--image", inputs / "photo.png",
                       "--extend", "8,0,0,0", *FAST, "-o", tmp_path / "e.png")
    assert code == 0, err
    assert pixels(tmp_path / "e.png").shape == (H, W + 8, 3)


@pytest.mark.parametrize(("argv", "message"), [
    (["inpaint", "x", "--image", "{d}/photo.png", "--mask", "{d}/small_mask.png"],
     f"small_mask.png is {W}×{H // 2} but the image is {W}×{H}: resize the mask or pass --resize-mask"),
    (["inpaint", "x", "--image", "{d}/photo.png"], "inpaint needs a mask"),
    (["inpaint", "x", "--image", "{d}/gone.png", "--mask", "{d}/mask.png"], "image not found: .*gone.png"),
    (["inpaint", "x", "--image", "{d}/broken.png", "--mask", "{d}/mask.png"], "cannot read image .*broken.png"),
    (["inpaint", "x", "--image", "{d}/photo.png", "--mask", "{d}/nothere.png"], "mask not found: .*nothere.png"),
    (["inpaint", "x", "--image", "{d}/photo.png", "--mask", "{d}/mask.png", "--strength", "1.5"],
     "strength must be between 0 and 1"),
    (["outpaint", "x", "--image", "{d}/photo.png"], "outpaint needs --extend"),
    (["outpaint", "x", "--image", "{d}/photo.png", "--extend", "1,2"], "LEFT,TOP,RIGHT,BOTTOM"),
    (["generate", "x", "--pag-scale", "-2"], "pag-scale must be between"),
    (["img2img", "x", "--image", "{d}/photo.png", "--pag-layers", "mid"], "--pag-layers goes with --pag-scale"),
    (["generate", "x", "--control", "canny"], "--control expects TYPE=IMAGE"),
    (["generate", "x", "--control", "canny={d}/nothere.png"], "image not found"),
    (["generate", "x", "--control", "canny={d}/photo.png"], "no ControlNet folder for 'canny' controls"),
    (["generate", "x", "--control", "canny={d}/photo.png", "--controlnet", "canny={d}/none"],
     "ControlNet folder not found"),
    (["generate", "x", "--control", "canny={d}/photo.png:0.5", "--controlnet", "canny={d}",
      "--control-start", "0.9", "--control-end", "0.5"], "start/end must satisfy"),
    (["generate", "x", "--control", "depth={d}/photo.png", "--detect", "depth"],
     "--detect depth needs the annotator weights: --annotators DIR"),
    (["generate", "x", "--control", "canny={d}/photo.png", "--detect", "depth", "--annotators", "{d}"],
     "--detect depth goes with --control depth=PHOTO"),
    (["inpaint", "x", "--image", "{d}/photo.png", "--mask", "{d}/mask.png", "--control", "canny"],
     "--control expects TYPE=IMAGE"),
    (["inpaint", "x", "--image", "{d}/photo.png", "--mask", "{d}/mask.png", "--control", "canny={d}/photo.png:-0.5",
      "--controlnet", "canny={d}"], "control scale must be a number >= 0, got -0.5"),
    (["inpaint", "x", "--image", "{d}/photo.png", "--mask", "{d}/mask.png", "--control", "canny={d}/gone.png",
      "--controlnet", "canny={d}"], "--control canny: image not found: .*gone.png"),
])
def test_mistakes_are_one_line_errors_before_loading(model, inputs, capsys, no_model_loading, argv, message):
    code, out, err = run(capsys, *[a.format(d=inputs) for a in argv], "--model", model)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert pytest.importorskip("re").search(message, err), err


def test_control_is_stored_with_official_defaults_and_replayed(model, inputs, controlnet_dir, tmp_path, capsys):
    out = tmp_path / "c.png"
    code, _, err = run(capsys, "generate", "一只白色的狗", "--model", model, "--control",
                       f"canny={inputs / 'photo.png'}", "--controlnet", f"canny={controlnet_dir}",
                       "--canny-thresholds", "50,150", "--pag-scale", "1.5", *FAST, "-o", out)
    assert code == 0, err
    params = read_parameters(out)
    assert params["guidance"] == 6.0 and (params["width"], params["height"]) == (W, H)
    assert params["controls"] == [{"type": "canny", "image": str(inputs / "photo.png"), "scale": 0.7, "start": 0.0,
                                   "end": 0.9, "controlnet": str(controlnet_dir), "thresholds": [50, 150]}]
    text = read_png_text(out)["parameters"]
    assert "PAG scale: 1.5" in text and 'ControlNet 0: "Module: canny, Model: Kolors-ControlNet-Canny' in text
    again = tmp_path / "d.png"
    code, _, err = run(capsys, "generate", "--from-image", out, "--quiet", "-o", again)
    assert code == 0, err
    assert read_parameters(again)["controls"] == params["controls"]
    assert np.array_equal(pixels(again), pixels(out))


def test_control_folder_by_convention_and_img2img(model, inputs, controlnet_dir, tmp_path, capsys):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(model, models / "Kolors")
    shutil.copytree(controlnet_dir, models / "Kolors-ControlNet-Canny")
    out = tmp_path / "i.png"
    code, _, err = run(capsys, "img2img", "一只白色的狗", "--model", models / "Kolors", "--image",
                       inputs / "photo.png", "--control", f"canny={inputs / 'photo.png'}:0.5", "--control-end", 1,
                       *FAST, "-o", out)
    assert code == 0, err
    params = read_parameters(out)
    assert params["strength"] == 0.8
    assert params["controls"][0]["controlnet"] == str(models / "Kolors-ControlNet-Canny")
    assert (params["controls"][0]["scale"], params["controls"][0]["end"]) == (0.5, 1.0)


def test_inpaint_with_a_control_keeps_the_unmasked_pixels_stores_and_replays(inpainting_model, inputs,
                                                                            controlnet_dir, tmp_path, capsys,
                                                                            monkeypatch):
    monkeypatch.delenv("KOLORS_MODEL", raising=False)
    out = tmp_path / "ic.png"
    code, _, err = run(capsys, "inpaint", "一只红色的猫", "--model", inpainting_model, "--image",
                       inputs / "photo.png", "--mask", inputs / "mask.png", "--control",
                       f"canny={inputs / 'photo.png'}:0.5", "--controlnet", f"canny={controlnet_dir}", *FAST,
                       "-o", out)
    assert code == 0, err
    got, src = pixels(out), pixels(inputs / "photo.png")
    keep = pixels(inputs / "mask.png") < 128
    assert np.abs(got - src)[keep].max() <= 1
    params = read_parameters(out)
    assert params["controls"] == [{"type": "canny", "image": str(inputs / "photo.png"), "scale": 0.5, "start": 0.0,
                                   "end": 0.9, "controlnet": str(controlnet_dir)}]
    assert (params["mask"], params["guidance"]) == (str(inputs / "mask.png"), 6.0)
    assert 'ControlNet 0: "Module: canny' in read_png_text(out)["parameters"]
    again = tmp_path / "ic2.png"
    code, _, err = run(capsys, "inpaint", "--from-image", out, "--quiet", "-o", again)
    assert code == 0, err
    assert read_parameters(again)["controls"] == params["controls"]
    assert np.array_equal(pixels(again), got)



def test_outpaint_with_a_control_keeps_the_original_stores_and_replays(model, inputs, controlnet_dir, tmp_path,
                                                                      capsys):
    out = tmp_path / "oc.png"
    code, _, err = run(capsys, "outpaint", "群山", "--model", model, "--image", inputs / "photo.png",
                       "--extend", "8,0,0,0", "--feather", 0, "--control", f"canny={inputs / 'photo.png'}",
                       "--controlnet", f"canny={controlnet_dir}", *FAST, "-o", out)
    assert code == 0, err
    got = pixels(out)
    assert got.shape == (H, W + 8, 3)
    assert np.abs(got[:, 8:] - pixels(inputs / "photo.png")).max() <= 1
    params = read_parameters(out)
    assert params["controls"] == [{"type": "canny", "image": str(inputs / "photo.png"), "scale": 0.7, "start": 0.0,
                                   "end": 0.9, "controlnet": str(controlnet_dir)}]
    assert (params["extend"], params["guidance"]) == ([8, 0, 0, 0], 6.0)
    again = tmp_path / "oc2.png"
    code, _, err = run(capsys, "outpaint", "--from-image", out, "--quiet", "-o", again)
    assert code == 0, err
    assert np.array_equal(pixels(again), got)
