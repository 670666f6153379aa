"""Takes the README's ComfyUI screenshot: the ControlNet canny example in ComfyUI's page, after it has run.

    python tests/comfyui/screenshot.py [docs/images/comfyui_canny.png]

Starts the vendored ComfyUI as the tests do (comfy_setup), opens its page in headless Chromium (Debian's
``chromium`` through Playwright), loads the UI-format example, queues it, waits for the images and saves a PNG.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1] / "src")]

import comfyui_env  # noqa: E402
from comfy_setup import running_comfyui  # noqa: E402
from comfy_workflows import EXAMPLES_DIR, REPO  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
VIEW = {"width": 1600, "height": 900}


def take(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    workflow = json.loads((EXAMPLES_DIR / "controlnet_canny.json").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp, running_comfyui(Path(tmp), comfyui_env.find_tarball()) as comfy, \
            sync_playwright() as playwright:
        comfy.post("/settings/Comfy.TutorialCompleted", True)  # no "get started" template dialog
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport=VIEW)
        page.goto(comfy.url)
        page.wait_for_function("() => window.app && window.app.graph", timeout=120_000)
        page.evaluate("(w) => window.app.loadGraphData(w, true, true, 'controlnet_canny')", workflow)
        page.evaluate("() => window.app.queuePrompt(0, 1)")
        page.wait_for_function("() => window.app.nodeOutputs && window.app.nodeOutputs['5']", timeout=120_000)
        page.wait_for_timeout(2000)  # let the page draw the images
        page.keyboard.press("Escape")
        page.evaluate("() => { const c = window.app.canvas; c.ds.scale = 0.8; c.ds.offset = [10, 10]; "
                      "c.setDirty(true, true); }")
        page.wait_for_timeout(500)
        shot = page.screenshot()
        browser.close()
    _save_small(shot, out)


def _save_small(png: bytes, out: Path) -> None:
    """The screenshot with a 128-colour palette (the page is flat colours): a fraction of the bytes."""
    import io

    from PIL import Image

    Image.open(io.BytesIO(png)).convert("RGB").quantize(128).save(out, optimize=True)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "images" / "comfyui_canny.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    take(target)
    print(f"wrote {target} ({target.stat().st_size // 1024} KB)")
