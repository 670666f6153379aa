"""One headless ComfyUI per test module (comfy_setup), with the Kolors node pack in custom_nodes/."""

from __future__ import annotations

import sys

import pytest

import comfyui_env
from comfy_setup import running_comfyui


@pytest.fixture(scope="module")
def comfy(tmp_path_factory, request):
    tarball = comfyui_env.find_tarball()
    if tarball is None:
        pytest.skip("no vendored ComfyUI (shared/vendor/ComfyUI-*.tar.gz next to the checkout, or "
                    f"${comfyui_env.TARBALL_ENV})")
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def say(line: str) -> None:  # shown as it happens, even with pytest capturing output
        with capture.global_and_fixture_disabled():
            print(line, file=sys.stderr, flush=True)

    with running_comfyui(tmp_path_factory.mktemp("comfyui"), tarball, log=say) as server:
        yield server
