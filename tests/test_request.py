"""GenerationRequest: one-line errors for every value a user can get wrong (checked without torch), the JSON form,
and batch keys."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import zlib

import pytest
from PIL import Image

from kolors.errors import InvalidParameterError, KolorsError
from kolors.request import MAX_SEED, Control, FaceId, GenerationRequest, ImagePrompt, Lora


def png_declaring(path, width: int, height: int) -> None:
    """A PNG whose header declares ``width``×``height`` pixels and holds almost nothing (a decompression bomb's
    header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    Image.new("RGB", (64, 48), (200, 10, 10)).save(root / "image.png")
    Image.new("L", (64, 48), 255).save(root / "mask.png")
    Image.new("L", (64, 48), 0).save(root / "empty_mask.png")
    Image.new("L", (32, 48), 255).save(root / "small_mask.png")
    Image.new("RGB", (1, 1)).save(root / "one.png")
    png_declaring(root / "bomb.png", 100_000, 100_000)
    (root / "text.png").write_text("not an image")
    (root / "style.safetensors").write_bytes(b"")
    return root


CASES = [
    (dict(prompt="a \udcff cat"), "prompt is not valid UTF-8 text"),
    (dict(negative_prompt="\udc80"), "negative prompt is not valid UTF-8 text"),
    (dict(prompt="x" * 20_000), "prompt is 20000 characters long"),
    (dict(prompt=None), "no prompt given"),
    (dict(width=13), "width 13 is not a multiple of 8: try 8"),
    (dict(height=0), "height must be a positive number of pixels"),
    (dict(width=8192), "width 8192 is larger than 4096 pixels"),
    (dict(width="64"), "width must be a whole number, got '64'"),
    (dict(steps=0), "steps must be between 1 and 1000, got 0"),
    (dict(steps=2.5), "steps must be a whole number, got 2.5"),
    (dict(guidance=math.nan), "guidance must be between 0 and 100"),
    (dict(guidance=math.inf), "guidance must be between 0 and 100"),
    (dict(scheduler="plms"), "unknown scheduler 'plms': use one of default, euler"),
    (dict(seed=-1), f"seed must be between 0 and {MAX_SEED}"),
    (dict(seed=2**63), f"seed must be between 0 and {MAX_SEED}"),
    (dict(num_images=0), "num-images must be between 1 and 256"),
    (dict(num_images=True), "num-images must be a whole number, got True"),
    (dict(mode="turbo"), "unknown mode 'turbo'"),
    (dict(pag_scale=-1.0), "pag-scale must be between 0 and 100"),
    (dict(pag_scale=2.0, pag_layers="("), r"pag-layers: '\(' is not a valid pattern"),
    (dict(pag_layers="mid"), "--pag-layers goes with --pag-scale"),
    (dict(task="paint"), "unknown task 'paint'"),
    (dict(strength=0.5), "strength goes with an input image"),
    (dict(task="image-to-image"), "image-to-image needs an input image"),
    (dict(task="image-to-image", init_image="{d}/missing.png"), "image not found: "),
    (dict(task="image-to-image", init_image="{d}/text.png"), "cannot read image .*text.png: not an image file"),
    (dict(task="image-to-image", init_image="{d}/bomb.png"), "bomb.png .*than the 67-megapixel limit"),
    (dict(task="image-to-image", init_image="{d}/image.png", strength=1.5), "strength must be between 0 and 1"),
    (dict(task="inpaint", init_image="{d}/image.png"), "inpaint needs a mask"),
    (dict(task="inpaint", init_image="{d}/image.png", mask="{d}/bomb.png"), "mask .*bomb.png .*than the 67-megapixel limit"),
    (dict(task="inpaint", init_image="{d}/image.png", mask="{d}/empty_mask.png"), "the mask has no white"),
    (dict(task="inpaint", init_image="{d}/image.png", mask="{d}/small_mask.png"),
     "small_mask.png is 32×48 but the image is 64×48: resize the mask or pass --resize-mask"),
    (dict(task="inpaint", init_image="{d}/image.png", mask="{d}/mask.png", feather=-1),
     "feather must be between 0 and 1024"),
    (dict(task="outpaint", init_image="{d}/image.png"), "outpaint needs --extend"),
    (dict(task="outpaint", init_image="{d}/image.png", extend=(0, 0, 100_000, 0)), "extend must be between 0 and 4096"),
    (dict(task="outpaint", init_image="{d}/image.png", extend=(0, 0, 4090, 0)),
     "the outpainted canvas would be 4154×48, larger than 4096 pixels"),
    (dict(task="outpaint", init_image="{d}/image.png", extend=(0, 0, 0, 0)), "extend must grow at least one side"),
    (dict(task="outpaint", init_image="{d}/image.png", extend=(8, 0, 0, 0), width=64),
     "outpaint takes its size from the image"),
    (dict(mask="{d}/mask.png", task="image-to-image", init_image="{d}/image.png"), "a mask goes with inpaint"),
    (dict(controls=[Control("canny", "{d}/image.png", scale=math.inf)]), "control scale must be a number >= 0"),
    (dict(controls=[Control("canny", "{d}/image.png", start=0.5, end=0.5)]), "0 <= start < end <= 1"),
    (dict(controls=[Control("canny", "{d}/image.png", thresholds=(200, 100))]), "low <= high"),
    (dict(controls=[Control("canny", "{d}/bomb.png")]), "--control canny: image .*bomb.png .*67-megapixel"),
    (dict(controls=[Control("../x", "{d}/image.png")]), "unknown control type '../x'"),
    (dict(loras=[Lora("{d}/style.safetensors", math.nan)]), "weight of LoRA style.safetensors must be between"),
    (dict(loras=[Lora("{d}/nope.safetensors")]), "LoRA file not found"),
    (dict(ip_adapter=ImagePrompt("{d}", "{d}/one.png", scale=11)), "IP-Adapter scale must be between 0 and 10"),
    (dict(face_id=FaceId("{d}", "{d}/face.npy")), "face embedding not found"),
]


def _filled(value, folder):
    if isinstance(value, str):
        return value.replace("{d}", str(folder))
    if isinstance(value, (Control, Lora, ImagePrompt, FaceId)):
        for name, field_value in vars(value).items():
            setattr(value, name, _filled(field_value, folder))
        return value
    if isinstance(value, list):
        return [_filled(v, folder) for v in value]
    return value


@pytest.mark.parametrize(("fields", "message"), CASES, ids=[m[:40] for _, m in CASES])
def test_every_mistake_is_one_line_naming_the_field(files, fields, message):
    fields = {k: _filled(v, files) for k, v in fields.items()}
    prompt = fields.pop("prompt", "a cat")
    with pytest.raises(InvalidParameterError if "not found" not in message and "cannot read" not in message
                       and "megapixel" not in message else KolorsError, match=message) as err:
        GenerationRequest(prompt, **fields).validate()
    assert "\n" not in str(err.value)


def test_good_requests_pass_and_are_normalised(files):
    request = GenerationRequest("一只猫", task="outpaint", init_image=str(files / "image.png"), extend=[8, 0, 4, 0],
                                pag_scale=2, pag_layers="mid, up_blocks.0", width=80, height=48).validate()
    assert request.extend == (8, 0, 4, 0) and request.pag_layers == ("mid", "up_blocks.0")
    assert request.pag_scale == 2.0 and isinstance(request.pag_scale, float)
    one = GenerationRequest("x", init_image=files / "one.png").validate()  # a 1×1 image is fine (resized)
    assert one.resolved_task == "image-to-image" and one.init_image == str(files / "one.png")


def test_json_form_round_trips_and_refuses_unknown_settings(files):
    request = GenerationRequest("一只猫", negative_prompt="模糊", task="inpaint", init_image=str(files / "image.png"),
                                mask=str(files / "mask.png"), feather=3, seed=7, num_images=2,
                                controls=[Control("canny", str(files / "image.png"), scale=0.5)],
                                loras=[Lora(str(files / "style.safetensors"), 0.8)], pag_scale=1.5)
    data = json.loads(json.dumps(request.to_dict()))
    assert data["task"] == "inpaint" and data["controls"][0]["scale"] == 0.5 and "pag_layers" not in data
    again = GenerationRequest.from_dict(data)
    assert again.to_dict() == data and again.validate().to_dict() == request.validate().to_dict()
    with pytest.raises(InvalidParameterError, match="unknown setting 'sampler_name'"):
        GenerationRequest.from_dict({"prompt": "x", "sampler_name": "Euler"})
    assert GenerationRequest.from_dict({"prompt": "x", "sampler_name": "Euler"}, strict=False).prompt == "x"
    with pytest.raises(InvalidParameterError, match="unknown control setting 'strength'"):
        GenerationRequest.from_dict({"prompt": "x", "controls": [{"type": "canny", "strength": 1}]})
    with pytest.raises(InvalidParameterError, match="controls must be a list"):
        GenerationRequest.from_dict({"prompt": "x", "controls": {"type": "canny"}})
    with pytest.raises(InvalidParameterError, match="a generation request is a JSON object"):
        GenerationRequest.from_dict(["x"])
    stored = {**data, "model": "built-in", "device": "cpu", "dtype": "float32", "kolors_version": "0.1.0"}
    assert GenerationRequest.from_dict(stored).prompt == "一只猫"  # what a PNG holds replays


def test_batch_keys_differ_only_for_what_cannot_share_a_batch():
    base = GenerationRequest("a", steps=4)
    assert base.batch_key() == GenerationRequest("b", negative_prompt="x", seed=3, num_images=4, steps=4).batch_key()
    assert base.batch_key() != GenerationRequest("a", steps=5).batch_key()
    assert base.batch_key() != GenerationRequest("a", steps=4, loras=[Lora("x.safetensors")]).batch_key()


def test_checking_a_request_imports_no_torch(files):
    code = ("import sys; from kolors.request import GenerationRequest; "
            f"GenerationRequest('x', task='outpaint', init_image={str(files / 'image.png')!r}, extend=(8,0,0,0))"
            ".validate(); print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
