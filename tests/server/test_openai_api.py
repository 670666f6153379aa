"""The official ``openai`` client, unchanged, against a live server."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def oa(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_generations_b64_json_with_kolors_options(oa):
    result = oa.images.generate(model="kolors", prompt="a red circle", n=2, size="128x96",
                                response_format="b64_json", extra_body={"seed": 11, "steps": 4})
    images = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in result.data]
    assert [im.size for im in images] == [(128, 96), (128, 96)]
    assert "Seed: 11" in images[0].info["parameters"] and "Seed: 12" in images[1].info["parameters"]
    assert result.data[0].revised_prompt == "a red circle"


def test_generations_url_and_output_format(oa):
    result = oa.images.generate(model="kolors", prompt="a blue square", n=2, response_format="url",
                                extra_body={"seed": 3, "steps": 3, "output_format": "jpeg"})
    assert len(result.data) == 2
    for d in result.data:
        answer = httpx.get(d.url)
        assert answer.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(answer.content)).format == "JPEG"


def test_edits_with_a_mask_inpaint_the_transparent_part(oa):
    image = Image.new("RGB", (128, 128), (20, 160, 40))
    mask = Image.new("RGBA", (128, 128), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (40, 40, 88, 88))  # transparent: redraw
    result = oa.images.edit(image=("img.png", _png(image), "image/png"), mask=("mask.png", _png(mask), "image/png"),
                            prompt="a red circle", n=1, response_format="b64_json",
                            extra_body={"seed": 4, "steps": 4})
    out = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).convert("RGB")
    assert out.getpixel((5, 5)) == (20, 160, 40) and out.getpixel((120, 120)) == (20, 160, 40)
    assert out.getpixel((64, 64)) != (20, 160, 40)
    assert '"task": "inpaint"' in Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).info["kolors"]


def test_edits_without_a_mask_redraw_the_whole_image(oa):
    image = Image.new("RGB", (128, 128), (20, 160, 40))
    result = oa.images.edit(image=("img.png", _png(image), "image/png"), prompt="a red circle",
                            response_format="b64_json", extra_body={"seed": 4, "steps": 4, "strength": 0.8})
    out = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert '"task": "image-to-image"' in out.info["kolors"] and '"strength": 0.8' in out.info["kolors"]


def test_models(oa):
    assert [m.id for m in oa.models.list()] == ["kolors"]


def test_errors_raise_the_clients_exception_types(oa, server):
    with pytest.raises(openai.BadRequestError) as error:
        oa.images.generate(prompt="x", size="12x12x")
    assert error.value.body["param"] == "size" and "WIDTHxHEIGHT" in error.value.body["message"]
    with pytest.raises(openai.BadRequestError, match="n must be at least 1"):
        oa.images.generate(prompt="x", n=0)
    with pytest.raises(openai.BadRequestError, match="n must be at most 8 on this server"):
        oa.images.generate(prompt="x", n=1000)
    with pytest.raises(openai.BadRequestError, match="unknown field 'colour'"):
        oa.images.generate(prompt="x", extra_body={"colour": "red"})
    with pytest.raises(openai.BadRequestError, match="no alpha channel"):
        oa.images.edit(image=("i.png", _png(Image.new("RGB", (64, 64))), "image/png"),
                       mask=("m.png", _png(Image.new("L", (64, 64))), "image/png"), prompt="x")
    with pytest.raises(openai.NotFoundError):
        oa.models.retrieve("dall-e-3")
