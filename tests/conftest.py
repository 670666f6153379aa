"""Shared fixtures: tiny Kolors checkpoints in both published layouts and diffusers' reference pipeline."""

from __future__ import annotations

import os

# Two OpenMP threads spin-waiting on a busy 2-core machine made tiny generations ~100x slower; passive waiting
# keeps the suite fast whatever else runs. Must be set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers.tiny_kolors import write_tiny_kolors  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_kolors_diffusers(tmp_path_factory):
    """A tiny ``Kwai-Kolors/Kolors-diffusers`` folder (seed 0, fp16 variant files)."""
    return write_tiny_kolors(tmp_path_factory.mktemp("tiny_kolors"), "diffusers", seed=0)


@pytest.fixture(scope="session")
def tiny_kolors_original(tmp_path_factory):
    """A tiny original ``Kwai-Kolors/Kolors`` folder with the same weights as ``tiny_kolors_diffusers``."""
    return write_tiny_kolors(tmp_path_factory.mktemp("tiny_kolors"), "kolors", seed=0)


@pytest.fixture(scope="session")
def reference_pipeline(tiny_kolors_diffusers):
    """diffusers' own ``KolorsPipeline`` (fp32, CPU) on the diffusers-layout folder."""
    from diffusers import KolorsPipeline

    pipe = KolorsPipeline.from_pretrained(tiny_kolors_diffusers, variant="fp16", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def controlnet_dir(tiny_kolors_diffusers, tmp_path):
    """A tiny ControlNet for the tiny Kolors checkpoint, saved in the published Kolors-ControlNet layout."""
    from diffusers import UNet2DConditionModel

    from helpers.tiny_controlnet import save_controlnet, tiny_controlnet

    unet = UNet2DConditionModel.from_pretrained(tiny_kolors_diffusers / "unet", variant="fp16")
    save_controlnet(tiny_controlnet(unet, seed=0), tmp_path / "cn")
    return tmp_path / "cn"
