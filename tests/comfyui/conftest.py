"""One headless ComfyUI per test module (comfy_setup), with the Kolors node pack in custom_nodes/."""

from __future__ import annotations

import pytest

import comfyui_env
from comfy_setup import running_comfyui


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    tarball = comfyui_env.find_tarball()
    if tarball is None:
        pytest.skip("no vendored ComfyUI (shared/vendor/ComfyUI-*.tar.gz next to the checkout, or "
                    f"${comfyui_env.TARBALL_ENV})")
    with running_comfyui(tmp_path_factory.mktemp("comfyui"), tarball) as server:
        yield server
