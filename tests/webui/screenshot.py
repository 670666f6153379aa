"""Takes the README's web UI screenshot: the page in Chinese after a text-to-image run with the built-in model.

    python tests/webui/screenshot.py [docs/images/webui.png] [--seed N]

Starts ``kolors serve`` as the browser tests do (conftest.running_server), opens the page in headless Chromium
(Debian's ``chromium`` through Playwright) with a Chinese locale, writes the README's first prompt, generates four
images at the model's own defaults and saves the page. The seed is recorded in the image's panel, so the shot can
be taken again.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1] / "src")]

from webui.conftest import CHROMIUM, CHROMIUM_ARGS, running_server
from webui.webui_page import generate

PROMPT = "一个红色的圆形，白色背景"  # the README's first command
VIEW = {"width": 1280, "height": 900}


def take(out: Path, seed: int) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp)) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEW, locale="zh-CN")
        page.goto(server.url)
        page.wait_for_selector("body[data-ready=true]")
        page.fill("#prompt", PROMPT)
        page.fill("#num-images", "4")
        page.fill("#seed", str(seed))
        generate(page, timeout=120_000)
        page.wait_for_function("() => document.querySelectorAll('#gallery img').length >= 4", timeout=120_000)
        page.eval_on_selector_all("#gallery img", "imgs => Promise.all(imgs.map(i => i.decode()))")
        page.evaluate("() => { document.activeElement.blur(); window.scrollTo(0, 0); }")
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()
    print(f"saved {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=HERE.parents[1] / "docs" / "images" / "webui.png")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    take(args.out, args.seed)


if __name__ == "__main__":
    main()
