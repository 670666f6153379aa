"""Fixtures of the adapter tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.tiny_controlnet import save_controlnet, tiny_controlnet


@pytest.fixture
def controlnet_dir(tiny_kolors_diffusers, tmp_path) -> Path:
    """A tiny ControlNet for the tiny Kolors checkpoint, saved in the published Kolors-ControlNet layout."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_kolors_diffusers / "unet", variant="fp16")
    save_controlnet(tiny_controlnet(unet, seed=0), tmp_path / "cn")
    return tmp_path / "cn"
