"""Text to image in the browser: a Chinese prompt, the token counter, the image and its parameters, Ctrl+Enter,
download with metadata, reuse, loading parameters from a dropped PNG."""

from __future__ import annotations

import base64
import io
import json

from PIL import Image
from .webui_page import generate, set_fast, shown_parameters, wait_viewer_image

PROMPT = "一个红色的圆形，白色背景"


def test_chinese_prompt_makes_an_image_with_its_parameters(open_page, server, shots):
    page = open_page(locale="zh-CN")
    assert page.get_attribute("html", "lang") == "zh-CN"  # the browser's language
    shots(page, "empty")
    page.fill("#prompt", PROMPT)
    page.wait_for_function("() => Number(document.getElementById('prompt-tokens').dataset.tokens) > 0")
    tokens = int(page.get_attribute("#prompt-tokens", "data-tokens"))
    assert tokens == server.call("POST", "/api/v1/tokenize", {"text": PROMPT})["tokens"]
    assert f"{tokens} / 256" in page.text_content("#prompt-tokens")
    set_fast(page, seed=1234)
    job_id, index = generate(page)
    shots(page, "generated")

    size = page.eval_on_selector("#viewer-image", "i => [i.naturalWidth, i.naturalHeight]")
    assert size == [128, 128]
    params = shown_parameters(page)
    assert params["prompt"] == PROMPT and params["seed"] == "1234" and params["steps"] == "4"
    assert page.text_content("#viewer-infotext").startswith(PROMPT)
    assert "Seed: 1234" in page.text_content("#viewer-infotext")
    assert page.text_content("#viewer-command").startswith("kolors generate")
    assert page.locator(f'#gallery-list [data-image="{job_id}/{index}"] img').count() == 1
    job = server.call("GET", f"/api/v1/jobs/{job_id}")
    assert job["request"]["prompt"] == PROMPT and job["request"]["width"] == 128

    # the downloaded PNG is the server's, with the parameters in it
    with page.expect_download() as download:
        page.click("#viewer-download")
    png = Image.open(download.value.path())
    assert PROMPT in png.text["parameters"] and json.loads(png.text["kolors"])["seed"] == 1234


def test_ctrl_enter_generates_and_seed_reuse(open_page, shots):
    page = open_page()
    page.fill("#prompt", "a red circle")
    set_fast(page, seed=None)
    page.fill("#seed", "")
    before = page.locator("#gallery-list li").count()
    page.focus("#prompt")
    page.keyboard.press("Control+Enter")
    page.wait_for_function("n => document.querySelectorAll('#gallery-list li').length > n", arg=before,
                           timeout=45000)
    wait_viewer_image(page)
    seed = shown_parameters(page)["seed"]
    page.click("#seed-reuse")
    assert page.input_value("#seed") == seed  # the random seed the server chose, reused
    page.click("#seed-random")
    assert page.input_value("#seed") == ""
    shots(page, "after-ctrl-enter")


def test_reuse_parameters_and_load_them_from_a_dropped_png(open_page, server, shots):
    job = server.generate("一只蓝色的方块", negative_prompt="模糊", steps=5, seed=99, guidance=3.5, guidance_stop=0.4)
    page = open_page()
    default = server.call("GET", "/api/v1/info")["defaults"]["guidance_stop"]  # the model's own
    assert float(page.input_value("#guidance-stop")) == default
    page.click(f'#gallery-list [data-image="{job["id"]}/0"] button')
    wait_viewer_image(page)
    page.click("#viewer-reuse")
    assert page.input_value("#prompt") == "一只蓝色的方块"
    assert page.input_value("#negative-prompt") == "模糊"
    assert (page.input_value("#steps"), page.input_value("#seed"), page.input_value("#guidance")) == ("5", "99", "3.5")
    assert page.input_value("#guidance-stop") == "0.4"

    page.fill("#prompt", "")
    page.fill("#steps", "25")
    png = server.read(job["images"][0]["url"])
    page.evaluate("""data => {
        const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "result.png", {type: "image/png"}));
        document.querySelector("main").dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
    }""", base64.b64encode(png).decode())
    page.wait_for_function("() => document.getElementById('prompt').value !== ''")
    assert page.input_value("#prompt") == "一只蓝色的方块"
    assert (page.input_value("#steps"), page.input_value("#seed")) == ("5", "99")
    shots(page, "parameters-loaded")
    assert Image.open(io.BytesIO(png)).size == (128, 128)
