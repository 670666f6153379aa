"""Tasks that start from an image, in the browser: inpainting with a mask painted in the page (pixels outside
it unchanged), ControlNet with the detected map shown before generating, image to image from a result, and
outpainting's extended canvas."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from .webui_page import choose_file, generate, open_panel, scene_png, set_fast, shown_parameters


def _png(data: bytes, mode: str = "RGB") -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode))


def _drag(page, selector: str, points: list[tuple[float, float]]) -> None:
    """Drag the mouse along ``points`` given as fractions of the element's box."""
    box = page.locator(selector).bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for point in xy[1:]:
        page.mouse.move(*point, steps=5)
    page.mouse.up()


def test_paint_a_mask_and_inpaint_keeps_the_rest(open_page, server, shots):
    page = open_page()
    page.click("label[for=task-inpaint]")
    scene = scene_png()
    choose_file(page, "#init-file", "scene.png", scene)
    page.wait_for_selector("#stage:not([hidden]) #mask-canvas:not([hidden])")
    page.wait_for_function("() => document.getElementById('stage-image').naturalWidth === 128")
    page.fill("#brush-size", "12")
    page.dispatch_event("#brush-size", "input")
    _drag(page, "#mask-canvas", [(0.3, 0.3), (0.7, 0.3), (0.7, 0.5)])
    page.click("label[for=brush-erase]")
    _drag(page, "#mask-canvas", [(0.7, 0.35), (0.7, 0.5)])  # the eraser takes part of it back
    page.fill("#prompt", "一个红色的圆形")
    set_fast(page)
    shots(page, "mask-painted")
    job_id, index = generate(page)
    shots(page, "inpainted")

    job = server.call("GET", f"/api/v1/jobs/{job_id}")
    assert job["request"]["task"] == "inpaint" and job["request"]["init_image"].startswith("upload:")
    mask = _png(server.read(f"/api/v1/uploads/{job['request']['mask'].split(':')[1]}"), "L")
    assert set(np.unique(mask)) == {0, 255}  # black and white, as painted
    painted = mask == 255
    assert 0.02 < painted.mean() < 0.3
    assert not painted[int(0.45 * 128), int(0.7 * 128)]  # erased
    result = _png(server.read(f"/api/v1/jobs/{job_id}/images/{index}"))
    original = _png(scene)
    assert np.array_equal(result[~painted], original[~painted])  # outside the mask: unchanged
    assert np.abs(result[painted].astype(int) - original[painted]).mean() > 5  # inside: redrawn


def test_invert_and_clear_the_mask(open_page):
    page = open_page()
    page.click("label[for=task-inpaint]")
    choose_file(page, "#init-file", "scene.png", scene_png(64))
    page.wait_for_function("() => document.getElementById('mask-canvas').width === 64")
    coverage = ("() => { const c = document.getElementById('mask-canvas');"
                " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                " let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] >= 128; return n / (c.width * c.height); }")
    assert page.evaluate(coverage) == 0
    _drag(page, "#mask-canvas", [(0.1, 0.5), (0.9, 0.5)])
    painted = page.evaluate(coverage)
    page.click("#mask-invert")
    assert abs(page.evaluate(coverage) - (1 - painted)) < 1e-9
    page.click("#mask-clear")
    assert page.evaluate(coverage) == 0


def test_control_scene_shows_its_canny_map_then_generates(open_page, server, shots):
    page = open_page()
    open_panel(page, "#controls-panel")
    page.click("#control-add")
    card = page.locator("#controls-list fieldset").first
    assert card.locator("[data-role=type]").input_value() == "canny"
    assert card.locator("[data-role=detect]").is_checked()
    # the empty choice says which ControlNet it stands for (the built-in canny one); depth has none
    default = card.locator("[data-role=model] option").first
    assert default.inner_text() == "Default (kolors-shapes-small-controlnet-canny)"
    card.locator("[data-role=type]").select_option("depth")
    assert default.inner_text() == "Default"
    card.locator("[data-role=type]").select_option("canny")
    choose_file(page, "#controls-list input[type=file]", "scene.png", scene_png())
    page.wait_for_function("() => { const i = document.querySelector('#controls-list [data-role=map]');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    shots(page, "canny-map")
    # the map shown is the server's canny map of the scene: white edges on black, where the scene's edges are
    edges = page.evaluate("""() => { const i = document.querySelector('#controls-list [data-role=map]');
        const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;
        const x = c.getContext('2d'); x.drawImage(i, 0, 0);
        return Array.from(x.getImageData(0, 0, c.width, c.height).data.filter((_, k) => k % 4 === 0)); }""")
    edges = np.array(edges).reshape(128, 128) > 127
    assert 0.01 < edges.mean() < 0.2
    assert edges[16, 16:64].any() and not edges[90:100, 20:40].any()  # the square's top edge; flat background

    page.fill("#prompt", "a red circle")
    set_fast(page)
    job_id, _ = generate(page)
    shots(page, "generated-with-control")
    control = server.call("GET", f"/api/v1/jobs/{job_id}")["request"]["controls"][0]
    assert control["type"] == "canny" and control["image"].startswith("upload:") and control["detect"] is True
    # shown as words, not as JSON
    shown = shown_parameters(page)["controls"]
    assert shown.startswith("type canny, image upload:") and "scale 0.7" in shown and "{" not in shown, shown


def test_send_a_result_to_image_to_image_and_outpaint(open_page, server, shots):
    job = server.generate("a red circle", seed=3)
    page = open_page()
    page.click(f'#gallery-list [data-image="{job["id"]}/0"] button')
    page.click("#viewer-to-i2i")
    page.wait_for_function("() => document.getElementById('stage-image').naturalWidth === 128")
    assert page.is_checked("#task-i2i") and page.is_hidden("#size-inputs")
    page.fill("#prompt", "a blue circle")
    set_fast(page)
    new_id, _ = generate(page)
    request = server.call("GET", f"/api/v1/jobs/{new_id}")["request"]
    default = server.call("GET", "/api/v1/info")["defaults"]["img2img_strength"]  # the model's own (0.6 built-in)
    assert request["init_image"] == f"job:{job['id']}/0" and request["strength"] == default

    page.click("label[for=task-outpaint]")
    page.fill("#extend-right", "30")
    page.fill("#extend-top", "16")
    page.dispatch_event("#extend-top", "input")
    assert page.text_content("#extend-size").endswith("160 × 144")  # 128 + 30 grows to a multiple of 8
    shots(page, "outpaint-canvas")
    new_id, index = generate(page)
    result = server.call("GET", f"/api/v1/jobs/{new_id}")
    assert result["request"]["extend"] == [0, 16, 30, 0]
    assert Image.open(io.BytesIO(server.read(result["images"][index]["url"]))).size == (160, 144)
