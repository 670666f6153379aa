"""PNG generation parameters: A1111 infotext conventions, the JSON chunk, atomic writes, one-line read errors."""

from __future__ import annotations

import json
import os
import stat
import zlib

import pytest
from PIL import Image, PngImagePlugin

from kolors import KolorsError
from kolors.metadata import format_parameters, parse_parameters, read_parameters, read_png_text, save_png

PARAMS = {"prompt": "一只红色的猫, sitting: on a mat", "negative_prompt": "模糊, 低质量", "width": 64, "height": 48,
          "steps": 25, "guidance": 5.0, "seed": 42, "scheduler": "dpmpp_2m_karras",
          "model": "Kwai-Kolors/Kolors-diffusers", "device": "cpu", "dtype": "float32", "kolors_version": "0.1.0"}


def image() -> Image.Image:
    return Image.new("RGB", (8, 6), (200, 30, 30))


# --- A1111 text ------------------------------------------------------------------------------------------------
def test_a1111_infotext_layout():
    lines = format_parameters(PARAMS).split("\n")
    assert lines == [
        "一只红色的猫, sitting: on a mat",
        "Negative prompt: 模糊, 低质量",
        "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5.0, Seed: 42, Size: 64x48, "
        "Model: Kwai-Kolors/Kolors-diffusers, Version: kolors 0.1.0",
    ]


def test_a1111_conventions_for_quoting_samplers_and_missing_fields():
    text = format_parameters({"prompt": "a\nb", "steps": 3, "guidance": 7.5, "seed": 1, "width": 8, "height": 16,
                              "scheduler": "default", "model": "C:\\models\\kolors, v1", "strength": 0.3})
    prompt, negative_free_fields = text.rsplit("\n", 1)
    assert prompt == "a\nb" and "Negative prompt" not in text
    # values with a comma or colon are JSON-quoted, as A1111's quote() does
    assert 'Model: "C:\\\\models\\\\kolors, v1"' in negative_free_fields
    assert "Sampler: Euler, CFG scale: 7.5" in negative_free_fields and "Schedule type" not in text
    assert "Denoising strength: 0.3" in negative_free_fields
    assert parse_parameters(text)["model"] == "C:\\models\\kolors, v1"


@pytest.mark.parametrize("scheduler", ["euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "unipc"])
def test_every_scheduler_survives_the_text(scheduler):
    assert parse_parameters(format_parameters({**PARAMS, "scheduler": scheduler}))["scheduler"] == scheduler


def test_text_parses_back_to_the_parameters():
    back = parse_parameters(format_parameters(PARAMS))
    for key in ("prompt", "negative_prompt", "width", "height", "steps", "guidance", "seed", "scheduler", "model"):
        assert back[key] == PARAMS[key], key


def test_parses_infotext_written_by_automatic1111():
    text = ("masterpiece, 1girl,\nred hair\nNegative prompt: lowres, bad anatomy\nmore negative\n"
            'Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 123456, Size: 832x1216, Model hash: 31e35c80fc, '
            'Model: sd_xl_base_1.0, Lora hashes: "detail: 0123456789ab", Version: v1.7.0')
    assert parse_parameters(text) == {
        "prompt": "masterpiece, 1girl,\nred hair", "negative_prompt": "lowres, bad anatomy\nmore negative",
        "steps": 30, "scheduler": "dpmpp_2m_karras", "guidance": 7.0, "seed": 123456, "width": 832, "height": 1216,
        "model": "sd_xl_base_1.0", "lora_hashes": "detail: 0123456789ab"}
    # an unknown sampler is left out rather than guessed; a prompt-only text is all prompt
    assert "scheduler" not in parse_parameters("x\nSteps: 20, Sampler: Heun, CFG scale: 7, Seed: 1")
    assert parse_parameters("style: anime, colour: red") == {"prompt": "style: anime, colour: red"}


# --- PNG files -------------------------------------------------------------------------------------------------
def test_round_trip_with_chinese_text(tmp_path):
    path = save_png(image(), tmp_path / "猫.png", PARAMS)
    assert path == tmp_path / "猫.png"
    assert read_parameters(path) == PARAMS
    with Image.open(path) as im:
        assert im.text["parameters"] == format_parameters(PARAMS)
        assert json.loads(im.text["kolors"]) == PARAMS
        assert im.size == (8, 6) and im.getpixel((0, 0)) == (200, 30, 30)
    raw = path.read_bytes()
    assert b"iTXtparameters" in raw and b"iTXtkolors" in raw  # UTF-8 chunks: Chinese is kept as is
    assert [p.name for p in tmp_path.iterdir()] == ["猫.png"]


def test_file_gets_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_png(image(), tmp_path / "a.png", PARAMS)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_overwrite_false_keeps_an_existing_file(tmp_path):
    target = tmp_path / "a.png"
    target.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        save_png(image(), target, PARAMS, overwrite=False)
    assert target.read_bytes() == b"precious" and [p.name for p in tmp_path.iterdir()] == ["a.png"]
    save_png(image(), target, PARAMS)  # the default replaces it
    assert read_parameters(target)["seed"] == 42


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(b"old")

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(KolorsError, match=r"cannot write .*a\.png: No space left on device"):
        save_png(image(), tmp_path / "a.png", PARAMS)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"] and (tmp_path / "a.png").read_bytes() == b"old"


def test_interrupted_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def interrupted(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_png(image(), tmp_path / "a.png", PARAMS)
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(KolorsError, match=r"cannot write .*nowhere.*the folder .*nowhere does not exist") as info:
        save_png(image(), tmp_path / "nowhere" / "a.png", PARAMS)
    assert "\n" not in str(info.value)


def test_read_only_folder_is_named(tmp_path):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    try:
        if os.access(readonly, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(KolorsError, match=r"cannot write .*ro.a\.png: Permission denied"):
            save_png(image(), readonly / "a.png", PARAMS)
        assert list(readonly.iterdir()) == []
    finally:
        readonly.chmod(0o700)


def test_a_folder_in_the_way_is_an_error(tmp_path):
    (tmp_path / "a.png").mkdir()
    with pytest.raises(KolorsError, match="cannot write"):
        save_png(image(), tmp_path / "a.png", PARAMS)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_reads_a1111_text_only_pngs(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 4, Sampler: Euler a, CFG scale: 3, Seed: 9, Size: 8x6")
    image().save(tmp_path / "a1111.png", pnginfo=info)
    assert read_parameters(tmp_path / "a1111.png") == {"prompt": "a cat", "steps": 4, "scheduler": "euler_a",
                                                       "guidance": 3.0, "seed": 9, "width": 8, "height": 6}


def test_reads_a_chunk_stored_after_the_image_data(tmp_path):
    image().save(tmp_path / "plain.png")
    raw = (tmp_path / "plain.png").read_bytes()
    body = b"kolors\x00" + json.dumps({"seed": 7}).encode()
    chunk = len(body).to_bytes(4, "big") + b"tEXt" + body + zlib.crc32(b"tEXt" + body).to_bytes(4, "big")
    iend = raw.rindex(b"IEND") - 4
    (tmp_path / "late.png").write_bytes(raw[:iend] + chunk + raw[iend:])
    assert read_png_text(tmp_path / "late.png") == {"kolors": '{"seed": 7}'}
    assert read_parameters(tmp_path / "late.png") == {"seed": 7}


@pytest.mark.parametrize("name, content, message", [
    ("a.jpg", "jpeg", "is a JPEG file, not a PNG"),
    ("plain.png", "png", "holds no generation parameters"),
    ("junk.png", b"junk", "not an image file"),
    ("truncated.png", b"\x89PNG\r\n\x1a\n\x00\x00", "cannot read"),
    ("missing.png", None, "image not found"),
])
def test_unreadable_files_give_one_line_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content in ("jpeg", "png"):
        image().save(path, format=content.upper())
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(KolorsError, match=message) as info:
        read_parameters(path)
    assert "\n" not in str(info.value) and name in str(info.value)


def test_foreign_or_broken_json_chunk_falls_back_to_the_text(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_itxt("kolors", "[1, 2")
    info.add_itxt("parameters", format_parameters(PARAMS))
    image().save(tmp_path / "a.png", pnginfo=info)
    assert read_parameters(tmp_path / "a.png")["seed"] == 42


def test_a1111_sampler_names_map_to_schedulers():
    from kolors.metadata import scheduler_from_a1111

    assert scheduler_from_a1111("Euler a") == "euler_a"
    assert scheduler_from_a1111("DPM++ 2M", "Karras") == "dpmpp_2m_karras"
    assert scheduler_from_a1111("DPM++ 2M Karras") == "dpmpp_2m_karras"
    assert scheduler_from_a1111("DPM++ 2M", "Automatic") == "dpmpp_2m"
    assert scheduler_from_a1111("Heun") is None
