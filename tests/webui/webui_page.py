"""What the browser tests do on the page, in the user's terms."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

FAST_STEPS = 4  # the built-in model at 128 px: well under a second per image on 2 cores


def set_fast(page, steps: int = FAST_STEPS, seed: int | None = 7) -> None:
    page.fill("#steps", str(steps))
    if seed is not None:
        page.fill("#seed", str(seed))


def generate(page, timeout: float = 45000):
    """Press Generate and wait until the new result is shown in the viewer; returns its job id and index."""
    before = page.get_attribute("#viewer", "data-image")
    page.click("#generate")
    page.wait_for_function("before => { const v = document.getElementById('viewer');"
                           " return !v.hidden && v.dataset.image && v.dataset.image !== before; }",
                           arg=before, timeout=timeout)
    wait_viewer_image(page)
    job_id, index = page.get_attribute("#viewer", "data-image").split("/")
    return job_id, int(index)


def wait_viewer_image(page) -> None:
    page.wait_for_function("() => { const i = document.getElementById('viewer-image');"
                           " return i.complete && i.naturalWidth > 0; }")


def shown_parameters(page) -> dict[str, str]:
    return page.eval_on_selector_all("#viewer-params dd",
                                     "dds => Object.fromEntries(dds.map(d => [d.dataset.param, d.textContent]))")


def scene_png(size: int = 128) -> bytes:
    """A control scene / input image: a grey background with a white square and a black disc."""
    image = Image.new("RGB", (size, size), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    draw.rectangle([size // 8, size // 8, size // 2, size // 2], fill=(255, 255, 255))
    draw.ellipse([size // 2, size // 2, size - size // 8, size - size // 8], fill=(0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def choose_file(page, selector: str, name: str, data: bytes, mime: str = "image/png") -> None:
    page.set_input_files(selector, files=[{"name": name, "mimeType": mime, "buffer": data}])


def open_panel(page, selector: str) -> None:
    page.eval_on_selector(selector, "d => { d.open = true; }")
