"""Loading the published layouts, single-file swaps, the Hub cache, and bad model folders."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers.ldm_keys import to_ldm_keys
from kolors import KolorsError, ModelLayoutError, load_pipeline
from kolors.loading import locate_model
from kolors.loading.weights import find_weight_files, read_weight_file

ARGS = dict(steps=3, width=32, height=32, seed=0, progress=False)


@pytest.fixture(scope="module")
def ours(tiny_kolors_diffusers):
    return load_pipeline(tiny_kolors_diffusers, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def baseline(ours):
    return ours("一只红色的猫", **ARGS).pixels


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_original_layout_gives_the_same_images_as_the_diffusers_layout(tiny_kolors_original, baseline):
    # Both fixtures hold the same random weights (same seed); only the file layout differs.
    original = load_pipeline(tiny_kolors_original, device="cpu", dtype="float32")
    assert np.abs(original("一只红色的猫", **ARGS).pixels - baseline).max() <= 1e-6


def test_bundled_python_files_are_never_executed(tiny_kolors_original):
    bundled = list(tiny_kolors_original.rglob("*.py"))
    assert bundled, "the original layout bundles modeling/tokenization code"
    load_pipeline(tiny_kolors_original, device="cpu", dtype="float32")  # those files raise when imported


def test_pickle_weights_are_loaded_with_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "pytorch_model.bin"
    with open(path, "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(ModelLayoutError, match="pytorch_model.bin"):
        read_weight_file(path)
    assert not (tmp_path / "pwned").exists()


def test_fp16_variant_is_preferred_for_half_precision_and_plain_for_fp32(tmp_path):
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"):
        save_file({"w": torch.zeros(1)}, str(tmp_path / name))
    assert find_weight_files(tmp_path, "fp16")[0].name == "diffusion_pytorch_model.fp16.safetensors"
    assert find_weight_files(tmp_path, None)[0].name == "diffusion_pytorch_model.safetensors"
    (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
    assert find_weight_files(tmp_path, None)[0].name == "diffusion_pytorch_model.fp16.safetensors"


def test_single_file_unet_in_diffusers_and_original_key_names(tiny_kolors_diffusers, tmp_path, baseline):
    unet_dir = tiny_kolors_diffusers / "unet"
    state = read_weight_file(find_weight_files(unet_dir)[0])
    config = json.loads((unet_dir / "config.json").read_text())
    diffusers_file, ldm_file = tmp_path / "unet_diffusers.safetensors", tmp_path / "unet_sdxl.safetensors"
    save_file(state, str(diffusers_file))
    save_file(to_ldm_keys(state, config["layers_per_block"]), str(ldm_file))
    for file in (diffusers_file, ldm_file):
        pipe = load_pipeline(tiny_kolors_diffusers, device="cpu", dtype="float32", unet_file=file)
        assert np.abs(pipe("一只红色的猫", **ARGS).pixels - baseline).max() <= 1e-6


def test_single_file_unet_changes_the_image_when_weights_differ(tiny_kolors_diffusers, tmp_path, baseline):
    unet_dir = tiny_kolors_diffusers / "unet"
    state = {k: v + 0.05 * torch.randn_like(v.float()).to(v.dtype)
             for k, v in read_weight_file(find_weight_files(unet_dir)[0]).items()}
    save_file(state, str(tmp_path / "other.safetensors"))
    pipe = load_pipeline(tiny_kolors_diffusers, device="cpu", dtype="float32", unet_file=tmp_path / "other.safetensors")
    assert np.abs(pipe("一只红色的猫", **ARGS).pixels - baseline).max() > 1e-3


def test_single_file_text_encoder_with_transformer_prefix(tiny_kolors_diffusers, tmp_path, baseline):
    files = find_weight_files(tiny_kolors_diffusers / "text_encoder")
    state = {}
    for f in files:
        state.update(read_weight_file(f))
    state = {("" if k.startswith("transformer.") else "transformer.") + k: v.contiguous() for k, v in state.items()}
    save_file(state, str(tmp_path / "chatglm3-fp16.safetensors"))
    pipe = load_pipeline(tiny_kolors_diffusers, device="cpu", dtype="float32",
                         text_encoder_file=tmp_path / "chatglm3-fp16.safetensors")
    assert np.abs(pipe("一只红色的猫", **ARGS).pixels - baseline).max() <= 1e-6


def test_unet_file_with_foreign_keys_is_rejected(tiny_kolors_diffusers, tmp_path):
    save_file({"something.else": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ModelLayoutError, match="UNet key names"):
        load_pipeline(tiny_kolors_diffusers, device="cpu", unet_file=tmp_path / "x.safetensors")


def test_hub_id_resolves_from_the_local_cache_offline(tiny_kolors_diffusers, tmp_path, monkeypatch, baseline):
    import huggingface_hub.constants as hf_constants

    repo = tmp_path / "hub" / "models--Kwai-Kolors--Kolors-diffusers"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_kolors_diffusers, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert locate_model("Kwai-Kolors/Kolors-diffusers") == repo / "snapshots" / commit
    pipe = load_pipeline("Kwai-Kolors/Kolors-diffusers", device="cpu", dtype="float32")
    assert np.abs(pipe("一只红色的猫", **ARGS).pixels - baseline).max() <= 1e-6


def test_hub_id_missing_from_cache_says_so(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLayoutError, match="not in the local Hugging Face cache"):
        locate_model("Kwai-Kolors/Kolors-diffusers")


def test_kolors_model_env_var_and_missing_folder(tiny_kolors_diffusers, tmp_path, monkeypatch):
    monkeypatch.setenv("KOLORS_MODEL", str(tiny_kolors_diffusers))
    assert locate_model(None) == tiny_kolors_diffusers
    with pytest.raises(ModelLayoutError, match="not found"):
        locate_model(tmp_path / "nowhere")


@pytest.mark.parametrize("component", ["unet", "vae", "text_encoder", "tokenizer", "scheduler"])
def test_missing_component_is_named(tiny_kolors_diffusers, tmp_path, component):
    folder = copy_model(tiny_kolors_diffusers, tmp_path / "m")
    shutil.rmtree(folder / component)
    with pytest.raises(ModelLayoutError, match=f"'{component}'"):
        load_pipeline(folder, device="cpu")


def test_truncated_weight_file_is_named(tiny_kolors_diffusers, tmp_path):
    folder = copy_model(tiny_kolors_diffusers, tmp_path / "m")
    weights = find_weight_files(folder / "unet", "fp16")[0]
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLayoutError, match=weights.name):
        load_pipeline(folder, device="cpu", dtype="float16")


def test_truncated_pickle_shard_is_named(tiny_kolors_original, tmp_path):
    folder = copy_model(tiny_kolors_original, tmp_path / "m")
    shard = sorted((folder / "text_encoder").glob("pytorch_model-*.bin"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ModelLayoutError, match=shard.name):
        load_pipeline(folder, device="cpu")


def test_missing_shard_is_named(tiny_kolors_original, tmp_path):
    folder = copy_model(tiny_kolors_original, tmp_path / "m")
    shard = sorted((folder / "text_encoder").glob("pytorch_model-*.bin"))[-1]
    shard.unlink()
    with pytest.raises(ModelLayoutError, match=shard.name):
        load_pipeline(folder, device="cpu")


def test_weights_of_another_architecture_are_rejected(tiny_kolors_diffusers, tmp_path):
    folder = copy_model(tiny_kolors_diffusers, tmp_path / "m")
    cfg_path = folder / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["cross_attention_dim"] = cfg["cross_attention_dim"] * 2
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelLayoutError, match="do not match its config"):
        load_pipeline(folder, device="cpu")


def test_model_defaults_file_is_used(tiny_kolors_diffusers, tmp_path):
    folder = copy_model(tiny_kolors_diffusers, tmp_path / "m")
    (folder / "kolors_defaults.json").write_text(json.dumps({"width": 24, "height": 16, "steps": 2, "guidance": 3.0}))
    pipe = load_pipeline(folder, device="cpu")
    result = pipe("a cat", seed=0, progress=False)
    assert result.images[0].size == (24, 16)
    assert (result.parameters[0]["steps"], result.parameters[0]["guidance"]) == (2, 3.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(width=30), "multiple of 8"), (dict(height=0), "positive"), (dict(width=8192), "larger than"),
    (dict(steps=0), "steps"), (dict(scheduler="heun"), "unknown scheduler"), (dict(num_images=0), "num-images"),
    (dict(seed=-1), "seed"),
])
def test_bad_parameters_raise_one_line_errors(ours, kwargs, message):
    with pytest.raises(KolorsError, match=message) as info:
        ours("a cat", progress=False, **{**dict(steps=2, width=32, height=32), **kwargs})
    assert "\n" not in str(info.value)


def test_unknown_device_and_dtype(tiny_kolors_diffusers):
    with pytest.raises(KolorsError, match="unknown device"):
        load_pipeline(tiny_kolors_diffusers, device="tpu")
    with pytest.raises(KolorsError, match="unknown dtype"):
        load_pipeline(tiny_kolors_diffusers, device="cpu", dtype="float8")


def test_truncation_warning_names_dropped_tokens(ours, caplog):
    long_prompt = " ".join(["red circle blue square yellow triangle"] * 80)
    with caplog.at_level("WARNING", logger="kolors"):
        ours(long_prompt, steps=1, width=32, height=32, seed=0, progress=False)
    messages = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert messages and any(ch.isdigit() for ch in messages[0])
    caplog.clear()
    with caplog.at_level("WARNING", logger="kolors"):
        ours("a short prompt", steps=1, width=32, height=32, seed=0, progress=False)
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]


def test_single_file_vae_in_diffusers_and_original_key_names(tiny_kolors_diffusers, tmp_path, baseline):
    from helpers.ldm_keys import vae_to_ldm_keys

    folder = copy_model(tiny_kolors_diffusers, tmp_path / "model")
    vae_weights = find_weight_files(folder / "vae")
    state = read_weight_file(vae_weights[0])
    for f in vae_weights:
        f.unlink()  # the file given must be what is read
    diffusers_file, ldm_file = tmp_path / "vae.safetensors", tmp_path / "sdxl_vae.safetensors"
    save_file(state, str(diffusers_file))
    save_file(vae_to_ldm_keys(state, prefix="first_stage_model."), str(ldm_file))
    for file in (diffusers_file, ldm_file):
        pipe = load_pipeline(folder, device="cpu", dtype="float32", vae_file=file)
        assert np.abs(pipe("一只红色的猫", **ARGS).pixels - baseline).max() <= 1e-6, file.name
    save_file({"something.else": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ModelLayoutError, match="neither diffusers nor original VAE key names"):
        load_pipeline(folder, device="cpu", vae_file=tmp_path / "x.safetensors")
