"""A headless ComfyUI ready for the Kolors nodes: unpacked, in its own environment, with a prepared base folder.

The vendored ComfyUI snapshot is unpacked into a temporary folder (the vendor folder may be read-only), runs in
its own environment (comfyui_env: made once per machine, a couple of minutes the first time, then reused) and
gets a temporary --base-directory: custom_nodes/kolors links to this checkout's comfyui/ folder (the documented
install), input/ holds the example images, models/ the files the example workflows name (a LoRA and an
IP-Adapter made for the built-in model), the built-in model split into single files, and a model folder.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import comfyui_env
from comfy_server import ComfyServer
from comfy_workflows import (
    EXAMPLE_IP_ADAPTER,
    EXAMPLE_LORA,
    EXAMPLES_DIR,
    FACE_EMBEDDING,
    FACE_ID_ADAPTER,
    MODEL_FOLDER,
    REPO,
    SDXL_VAE_FOLDER,
    SINGLE_FILES,
    load,
)


@contextlib.contextmanager
def running_comfyui(root: Path, tarball: Path, warm: bool = True,
                    log: Callable[[str], None] = comfyui_env.stderr_log) -> Iterator[ComfyServer]:
    """ComfyUI started under ``root`` (``warm``: after running the text-to-image example once, which imports
    diffusers and loads the built-in model), stopped on exit; ``log`` tells about making its environment."""
    source = comfyui_env.unpack(tarball, root / "src")
    venv = comfyui_env.environment(source, log)
    base = root / "base"
    prepare_base(base)
    server = ComfyServer(source, comfyui_env.python(venv), base, [REPO / "src", comfyui_env.shim(venv)])
    try:
        server.wait_until_up()
        if warm:
            server.run(load("text_to_image")[1])
        yield server
    finally:
        server.stop()


def prepare_base(base: Path) -> None:
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / "kolors").symlink_to(REPO / "comfyui", target_is_directory=True)
    shutil.copytree(EXAMPLES_DIR / "input", base / "input")
    write_face_embedding(base / "input" / FACE_EMBEDDING)
    models = base / "models"
    write_example_lora(models / "loras" / EXAMPLE_LORA)
    write_example_ip_adapter(models / "ipadapter")
    write_single_files(models)
    from kolors.loading import EMBEDDED_MODEL_DIR

    (models / "diffusers").mkdir(parents=True)
    shutil.copytree(EMBEDDED_MODEL_DIR, models / "diffusers" / MODEL_FOLDER)
    write_sdxl_vae_model(models / "diffusers" / SDXL_VAE_FOLDER)


def write_sdxl_vae_model(folder: Path) -> None:
    """The built-in model with a VAE of the SDXL VAE's architecture (random weights) in place of its own: what
    ComfyUI's stock VAE nodes can take, as with real Kolors."""
    import torch
    from diffusers import AutoencoderKL

    from kolors.loading import EMBEDDED_MODEL_DIR

    shutil.copytree(EMBEDDED_MODEL_DIR, folder, ignore=shutil.ignore_patterns("vae"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            scaling_factor=0.13025, force_upcast=True)
    vae.save_pretrained(folder / "vae")


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


def _builtin_config(component: str) -> dict:
    from kolors.loading import EMBEDDED_MODEL_DIR

    config = json.loads((EMBEDDED_MODEL_DIR / component / "config.json").read_text())
    return {k: v for k, v in config.items() if not k.startswith("_")}


def write_example_ip_adapter(folder: Path) -> None:
    """Small Kolors-IP-Adapter-Plus and FaceID-Plus folders made for the built-in model."""
    from helpers.tiny_ip_adapter import write_tiny_face_id_plus, write_tiny_ip_adapter_plus

    unet = _builtin_config("unet")
    write_tiny_ip_adapter_plus(folder, name=EXAMPLE_IP_ADAPTER, unet_config=unet)
    write_tiny_face_id_plus(folder, name=FACE_ID_ADAPTER, unet_config=unet,
                            width=_builtin_config("text_encoder")["hidden_size"])


def write_face_embedding(path: Path) -> None:
    """A 512-d face embedding file (as insightface's antelopev2 gives), for FaceID without insightface."""
    import numpy as np

    np.save(path, np.random.default_rng(0).standard_normal(512).astype(np.float32))


def write_single_files(models: Path) -> None:
    """The built-in model's UNet, text encoder and VAE as the single files ComfyUI users keep."""
    from kolors.loading import EMBEDDED_MODEL_DIR

    for kind, name in SINGLE_FILES.items():
        component = {"unet": "unet", "text_encoders": "text_encoder", "vae": "vae"}[kind]
        (models / kind).mkdir(parents=True)
        (weights,) = (EMBEDDED_MODEL_DIR / component).glob("*.safetensors")
        shutil.copyfile(weights, models / kind / name)
