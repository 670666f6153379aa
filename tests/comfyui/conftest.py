"""One headless ComfyUI per test module, with the Kolors node pack in custom_nodes/ and test files in models/.

The vendored ComfyUI snapshot is unpacked into a temporary folder (the vendor folder may be read-only), runs in
its own environment (comfyui_env: made once per machine, a couple of minutes the first time, then reused) and
gets a temporary --base-directory: custom_nodes/kolors links to this checkout's comfyui/ folder (the documented
install), input/ holds the example images, models/ the files the example workflows name (a LoRA and an
IP-Adapter made for the built-in model), the built-in model split into single files, and a model folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import comfyui_env
from comfy_server import ComfyServer
from comfy_workflows import EXAMPLE_IP_ADAPTER, EXAMPLE_LORA, EXAMPLES_DIR, MODEL_FOLDER, REPO, SINGLE_FILES, load


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    tarball = comfyui_env.find_tarball()
    if tarball is None:
        pytest.skip("no vendored ComfyUI (shared/vendor/ComfyUI-*.tar.gz next to the checkout, or "
                    f"${comfyui_env.TARBALL_ENV})")
    root = tmp_path_factory.mktemp("comfyui")
    source = comfyui_env.unpack(tarball, root / "src")
    venv = comfyui_env.environment(source)
    base = root / "base"
    prepare_base(base)
    server = ComfyServer(source, comfyui_env.python(venv), base, [REPO / "src", comfyui_env.shim(venv)])
    try:
        server.wait_until_up()
        _, api = load("text_to_image")
        server.run(api)  # the first use imports diffusers and loads the built-in model: here, not in a test
        yield server
    finally:
        server.stop()


def prepare_base(base: Path) -> None:
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / "kolors").symlink_to(REPO / "comfyui", target_is_directory=True)
    shutil.copytree(EXAMPLES_DIR / "input", base / "input")
    models = base / "models"
    write_example_lora(models / "loras" / EXAMPLE_LORA)
    write_example_ip_adapter(models / "ipadapter")
    write_single_files(models)
    from kolors.loading import EMBEDDED_MODEL_DIR

    (models / "diffusers").mkdir(parents=True)
    shutil.copytree(EMBEDDED_MODEL_DIR, models / "diffusers" / MODEL_FOLDER)


def _builtin_unet():
    import torch

    from kolors.loading import EMBEDDED_MODEL_DIR
    from kolors.loading.components import load_unet

    return load_unet(EMBEDDED_MODEL_DIR / "unet", torch.device("cpu"), torch.float32, variant="fp16")


def write_example_lora(path: Path) -> None:
    """A random LoRA for the built-in UNet's attention layers (it visibly changes the image)."""
    from helpers.tiny_lora import peft_lora, write_lora

    path.parent.mkdir(parents=True)
    write_lora(path, peft_lora(_builtin_unet(), ["to_q", "to_k", "to_v", "to_out.0"], 4, seed=5))


def write_example_ip_adapter(folder: Path) -> None:
    """A small Kolors-IP-Adapter-Plus folder made for the built-in UNet."""
    from helpers.tiny_ip_adapter import write_tiny_ip_adapter_plus
    from kolors.loading import EMBEDDED_MODEL_DIR

    config = {k: v for k, v in json.loads((EMBEDDED_MODEL_DIR / "unet" / "config.json").read_text()).items()
              if not k.startswith("_")}
    write_tiny_ip_adapter_plus(folder, name=EXAMPLE_IP_ADAPTER, unet_config=config)


def write_single_files(models: Path) -> None:
    """The built-in model's UNet, text encoder and VAE as the single files ComfyUI users keep."""
    from kolors.loading import EMBEDDED_MODEL_DIR

    for kind, name in SINGLE_FILES.items():
        component = {"unet": "unet", "text_encoders": "text_encoder", "vae": "vae"}[kind]
        (models / kind).mkdir(parents=True)
        (weights,) = (EMBEDDED_MODEL_DIR / component).glob("*.safetensors")
        shutil.copyfile(weights, models / kind / name)
