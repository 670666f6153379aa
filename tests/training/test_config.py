"""`kolors train` settings: YAML/TOML files, --set overrides, errors that name the file and the key."""

from __future__ import annotations

import pytest

from kolors import KolorsError
from kolors.training.config import load_config

CONFIGS = "configs/train"


def test_yaml_then_set_then_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("mode: full\nlr: 1e-4\nsteps: 50\ndata: imgs\nsample_prompts: [一只红色的猫, a cat]\n")
    cfg = load_config(path, ["steps=7", "caption_dropout=0.05", "snr_gamma=null"], steps=None, lr=2e-5)
    assert (cfg.mode, cfg.steps, cfg.lr, cfg.caption_dropout, cfg.snr_gamma) == ("full", 7, 2e-5, 0.05, None)
    assert cfg.sample_prompts == ["一只红色的猫", "a cat"]


def test_toml_with_train_table(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nmode = "dreambooth"\ninstance_prompt = "a photo of sks dog"\ndata = "d"\nrank = 8\n')
    cfg = load_config(path)
    assert (cfg.mode, cfg.rank, cfg.instance_prompt) == ("dreambooth", 8, "a photo of sks dog")


@pytest.mark.parametrize("text, message", [
    ("mode: lora\nstep: 3\ndata: d\n", "unknown key 'step' (did you mean 'steps'?)"),
    ("mode: lora\nlr: fast\ndata: d\n", "'lr' must be float, got 'fast'"),
    ("mode: sometimes\ndata: d\n", "'mode' must be one of full, lora, dreambooth"),
    ("mode: [lora\n", "is not valid YAML"),
    ("- just\n- a list\n", "must hold a mapping"),
    ("mode: dreambooth\ndata: d\n", "'instance_prompt' is required"),
])
def test_bad_config_names_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(KolorsError) as info:
        load_config(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_missing_file_and_bad_set(tmp_path):
    with pytest.raises(KolorsError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(KolorsError, match="--set expects key=value"):
        load_config(None, ["steps"], data="d")


@pytest.mark.parametrize("name", ["lora.yaml", "full.yaml", "dreambooth.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(f"{CONFIGS}/{name}", data="images")  # the data folder comes from --data
    assert cfg.mode == name.removesuffix(".yaml")


@pytest.mark.parametrize("name", ["controlnet.yaml", "controlnet-shapes.yaml"])
def test_shipped_controlnet_configs_load(name):
    cfg = load_config(f"{CONFIGS}/{name}", data="pairs")
    assert cfg.mode == "controlnet" and cfg.controlnet_blocks in ("full", "light")


def test_controlnet_keys_are_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("mode: controlnet\ncontrolnet_blocks: tiny\n")
    with pytest.raises(KolorsError, match="'controlnet_blocks' must be one of full, light, got 'tiny'"):
        load_config(path, data="d")
    path.write_text("mode: controlnet\nconditioning_channels: [16, x]\n")
    with pytest.raises(KolorsError, match="'conditioning_channels' must be list"):
        load_config(path, data="d")
    assert load_config(path, ["conditioning_channels=[8, 16]"], data="d").conditioning_channels == [8, 16]
    with pytest.raises(KolorsError, match="'adam_epsilon' must be positive"):
        load_config(None, ["adam_epsilon=0"], data="d")
    assert load_config(None, ["adam_epsilon=1e-15"], data="d").adam_epsilon == 1e-15
