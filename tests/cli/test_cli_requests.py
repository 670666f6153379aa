"""The generating commands build one GenerationRequest: values blamed on the option that gave them, stored
records replayed or refused in one line, and the defaults that do what a prompt asks on the built-in model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from kolors.cli.main import main
from kolors.metadata import read_parameters


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def inputs(tmp_path):
    Image.new("RGB", (32, 24), (200, 30, 30)).save(tmp_path / "photo.png")
    (tmp_path / "style.safetensors").write_bytes(b"")
    (tmp_path / "style.pt").write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize(("argv", "message"), [
    (["--lora", "{d}/style.safetensors:abc"], "--lora {d}/style.safetensors:abc: the weight after ':' must be a "
                                              "number, got 'abc'"),
    (["--lora", "{d}/style.safetensors:inf"], "weight of LoRA style.safetensors must be between -100 and 100"),
    (["--lora", "{d}/nope.safetensors:0.5"], "LoRA file not found: {d}/nope.safetensors"),
    (["--control", "canny={d}/photo.png:abc"], "--control canny={d}/photo.png:abc: the scale after ':' must be a "
                                               "number, got 'abc'"),
    (["--lora", "{d}"], "LoRA folder {d} holds no pytorch_lora_weights.safetensors or adapter_model.safetensors"),
    (["--lora", "{d}/photo.png:0.5"], "LoRA file {d}/photo.png is not a .safetensors file"),
    (["--lora", "{d}/style.pt"], "LoRA file {d}/style.pt is a pickle (.pt), which can run code when read"),
    (["--control", "canny={d}/photo.png:-1"], "control scale must be a number >= 0, got -1.0"),
    (["--ip-adapter", "{d}/photo.png:x", "--ip-adapter-model", "{d}"], "the scale after ':' must be a number"),
    (["--width", "13"], "width 13 is not a multiple of 8: try 8"),
    (["--seed", str(2**63)], "seed must be between 0 and"),
])
def test_values_are_blamed_on_their_option_before_the_model_loads(no_model_loading, inputs, capsys, argv, message):
    argv = [a.replace("{d}", str(inputs)) for a in argv]
    code, _, err = run(capsys, "generate", "a cat", *argv, "-o", inputs / "out")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("kolors: error: ") and message.replace("{d}", str(inputs)) in err, err
    assert not (inputs / "out").exists()


def test_a_prompt_that_is_not_utf8_is_one_line(no_model_loading, tmp_path, capsys):
    code, _, err = run(capsys, "generate", "a \udcff cat", "-o", tmp_path / "out")
    assert (code, err) == (2, "kolors: error: prompt is not valid UTF-8 text: check the terminal's or the file's "
                              "encoding\n")


def test_a_damaged_kolors_record_is_not_replayed_silently(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KOLORS_MODEL", raising=False)
    info = PngImagePlugin.PngInfo()
    info.add_itxt("kolors", "{broken json")
    info.add_itxt("parameters", "a red circle\nSteps: 2, Sampler: Euler, CFG scale: 5.0, Seed: 3, Size: 32x32")
    Image.new("RGB", (32, 32)).save(tmp_path / "damaged.png", pnginfo=info)
    code, _, err = run(capsys, "generate", "--from-image", tmp_path / "damaged.png", "-q", "-o", tmp_path / "x.png")
    assert code == 0 and "kolors parameters in" in err and "are damaged: using its A1111 parameters text" in err
    assert read_parameters(tmp_path / "x.png")["prompt"] == "a red circle"
    bare = PngImagePlugin.PngInfo()
    bare.add_itxt("kolors", "[1, 2]")
    Image.new("RGB", (32, 32)).save(tmp_path / "bare.png", pnginfo=bare)
    code, _, err = run(capsys, "generate", "--from-image", tmp_path / "bare.png", "-o", tmp_path / "y.png")
    assert code == 2 and "are damaged (not a JSON object) and it has no A1111 parameters text" in err


def test_the_truncation_warning_names_the_negative_prompt(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KOLORS_MODEL", raising=False)
    code, _, err = run(capsys, "generate", "a red circle", "--negative-prompt", "blurry " * 400, "--steps", 1,
                       "--seed", 1, "-q", "-o", tmp_path / "x.png")
    assert code == 0 and "negative prompt is longer than the 256-token context" in err, err


def test_img2img_at_the_default_strength_follows_the_prompt_on_the_builtin_model(tmp_path):
    from kolors import GenerationRequest, load_pipeline
    from kolors.data.shapes import Scene, Shape, render
    from kolors.evaluation.shapes_checker import check_image

    render(Scene((Shape("triangle", "blue", "large", "center"),), background="white")).save(tmp_path / "blue.png")
    pipe = load_pipeline(device="cpu")
    found = [check_image(pipe.generate(GenerationRequest(prompt, init_image=str(tmp_path / "blue.png"), seed=seed),
                                       progress=False).images[0])
             for prompt in ("a red triangle", "一个红色的三角形") for seed in (0, 1, 2)]
    assert [(d.colour, d.shape) for d in found].count(("red", "triangle")) >= 5, found
    assert sum(d.position == "center" for d in found) >= 5, found  # redrawn, not replaced


def test_outpainting_at_the_default_feather_has_no_step_at_the_old_border(tmp_path):
    """A textured image (what the built-in model cannot continue): the generated strip differs, but at the old
    border the change from column to column is no larger than inside the image's own texture."""
    from kolors import GenerationRequest, load_pipeline

    rng = np.random.RandomState(0)
    y, x = np.mgrid[0:128, 0:128]
    image = np.stack([x * 2, y * 2, 255 - x], -1) + rng.randn(128, 128, 3) * 12
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(tmp_path / "texture.png")
    pipe = load_pipeline(device="cpu")
    for feather, seamless in ((None, True), (0, False)):
        result = pipe.generate(GenerationRequest("一个红色的圆形", init_image=str(tmp_path / "texture.png"),
                                                 extend=(0, 0, 64, 0), feather=feather, seed=0), progress=False)
        out = np.asarray(result.images[0], np.float32)
        steps = np.abs(np.diff(out, axis=1)).mean(axis=(0, 2))  # column-to-column change
        assert (steps[127] <= np.median(steps[100:120])) == seamless, (feather, steps[127], np.median(steps[100:120]))
    assert json.loads(json.dumps(result.parameters[0]))["feather"] == 0


def test_img2img_takes_a_one_pixel_image(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KOLORS_MODEL", raising=False)
    Image.new("RGB", (1, 1), (255, 0, 0)).save(tmp_path / "one.png")
    code, out, err = run(capsys, "img2img", "a red circle", "--image", tmp_path / "one.png", "--steps", 2, "--seed",
                         1, "-q", "-o", tmp_path / "x.png")
    assert code == 0, err
    assert Image.open(tmp_path / "x.png").size == (8, 8)  # the smallest size a model takes


def test_a_lora_with_nan_values_is_refused_and_the_model_is_untouched(tmp_path, capsys, monkeypatch):
    import torch
    from safetensors.torch import save_file

    monkeypatch.delenv("KOLORS_MODEL", raising=False)
    from kolors import load_pipeline

    unet = load_pipeline(device="cpu").components.unet
    module = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    width = unet.get_submodule(module).in_features
    down, up = torch.zeros(4, width), torch.full((width, 4), float("nan"))
    save_file({f"unet.{module}.lora_A.weight": down, f"unet.{module}.lora_B.weight": up}, tmp_path / "nan.safetensors")
    code, _, err = run(capsys, "generate", "a red circle", "--lora", tmp_path / "nan.safetensors", "--steps", 2,
                       "-o", tmp_path / "x.png")
    assert code == 2 and "LoRA file nan.safetensors is damaged: tensor" in err and "NaN or infinite" in err, err
    assert not (tmp_path / "x.png").exists()


def test_words_the_model_never_learned_are_named_once(tmp_path, capsys):
    """A model trained by kolors' recipe records its captions' vocabulary; the CLI names the prompt's words outside
    it (here the built-in model's parts, with a vocabulary that lacks "purple" and "宇航员")."""
    from kolors.loading.locate import EMBEDDED_MODEL_DIR
    from kolors.recipe.vocabulary import write_vocabulary

    folder = tmp_path / "model"
    folder.mkdir()
    for part in EMBEDDED_MODEL_DIR.iterdir():
        if part.name != "vocabulary.json":  # (written below: never through a link into the package)
            (folder / part.name).symlink_to(part)
    write_vocabulary(folder, ["a red circle on a white background", "一个红色的圆形"])
    code, _, err = run(capsys, "generate", "a purple circle, 宇航员", "--model", folder, "--steps", 1, "--seed", 1,
                       "-q", "-o", tmp_path / "x.png")
    assert code == 0, err
    assert err.count("never saw") == 1 and "never saw purple, 宇航员 in training" in err, err
    code, _, err = run(capsys, "generate", "一个红色的圆形", "--model", folder, "--steps", 1, "--seed", 1, "-q",
                       "-o", tmp_path / "y.png")
    assert code == 0 and "never saw" not in err, err


def test_the_built_in_model_names_the_colours_and_shapes_it_never_learned(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KOLORS_MODEL", raising=False)
    code, _, err = run(capsys, "generate", "a cyan hexagon in the top left corner, 青色", "--steps", 1, "--seed", 1,
                       "-q", "-o", tmp_path / "x.png")
    assert code == 0 and "never saw cyan, hexagon, 青 in training" in err, err
    code, _, err = run(capsys, "generate", "一个红色的圆形，白色背景", "--steps", 1, "--seed", 1, "-q",
                       "-o", tmp_path / "y.png")
    assert code == 0 and "never saw" not in err, err
