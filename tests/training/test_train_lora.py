"""A LoRA trained by `kolors train` loads into diffusers' KolorsPipeline and into kolors, and changes the image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import KolorsPipeline
from safetensors import safe_open

from kolors import load_pipeline
from kolors.adapters.lora import load_lora
from kolors.cli.main import main

PROMPT = "a red circle"
SEED = 3


@pytest.fixture(scope="module")
def trained_lora(train_model, shapes_metadata, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora_run")
    assert main(["train", "--model", str(train_model), "--data", str(shapes_metadata), "--output", str(out),
                 "--mode", "lora", "--steps", "30", "--batch-size", "2", "--lr", "1e-2", "--rank", "4", "--quiet",
                 "--set", "lora_alpha=8", "--set", "checkpoint_every=100"]) == 0
    return out / "pytorch_lora_weights.safetensors"


def _diffusers_image(pipe: KolorsPipeline) -> np.ndarray:
    return pipe(PROMPT, num_inference_steps=3, height=16, width=16, guidance_scale=5.0, output_type="np",
                generator=torch.Generator("cpu").manual_seed(SEED)).images[0]


def test_file_is_diffusers_format(trained_lora):
    with safe_open(str(trained_lora), framework="pt") as f:
        keys = list(f.keys())
        header = f.metadata()
    assert keys and all(k.startswith("unet.") for k in keys)
    assert any(".to_q.lora.down.weight" in k for k in keys) or any(".to_q.lora_A.weight" in k for k in keys)
    config = json.loads(header["lora_adapter_metadata"])
    assert (config["unet.r"], config["unet.lora_alpha"]) == (4, 8)


def test_loads_into_diffusers_and_kolors_and_changes_output(train_model, trained_lora):
    pipe = KolorsPipeline.from_pretrained(train_model, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    before = _diffusers_image(pipe)
    pipe.load_lora_weights(str(trained_lora))
    after = _diffusers_image(pipe)
    change = float(np.abs(after - before).mean())
    print(f"mean |Δ pixel| from the LoRA in diffusers: {change:.4f}")
    assert change > 0.01

    ours = load_pipeline(str(train_model), device="cpu", dtype="float32")
    plain = ours(PROMPT, width=16, height=16, steps=3, guidance=5.0, seed=SEED, progress=False).pixels[0]
    load_lora(ours, trained_lora)
    adapted = ours(PROMPT, width=16, height=16, steps=3, guidance=5.0, seed=SEED, progress=False).pixels[0]
    assert np.abs(plain - before).max() < 1e-4  # the two implementations agree without the LoRA ...
    assert np.abs(adapted - after).max() < 1e-4  # ... and with it
