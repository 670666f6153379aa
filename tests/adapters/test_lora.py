"""LoRA adapters: the published file formats, parity with diffusers, weights, fusing, unloading, bad files."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from diffusers import KolorsPipeline
from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_kohya
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import save_file

from helpers.tiny_lora import peft_lora
from kolors import KolorsError, load_pipeline
from kolors.adapters.lora import (
    a1111_lora_hashes,
    fuse_lora,
    load_lora,
    loaded_loras,
    lora_parameters,
    parse_lora_spec,
    set_lora_weights,
    unfuse_lora,
    unload_lora,
)

STEPS = 2
W, H = 32, 24
PROMPT = "一只红色的猫坐在沙发上"
SEED = 5
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "ff.net.2", "conv1"]  # conv1: a 3x3 Conv2d
TEXT_TARGETS = ["query_key_value", "dense"]
# kohya-ss names of the tiny UNet's attention blocks in SDXL's original (sgm) numbering (layers_per_block=1)
SGM_BLOCKS = {
    "down_blocks_1_attentions_0": "input_blocks_3_1",
    "mid_block_attentions_0": "middle_block_1",
    "up_blocks_0_attentions_0": "output_blocks_0_1",
    "up_blocks_0_attentions_1": "output_blocks_1_1",
}


# --- tiny LoRAs --------------------------------------------------------------------------------------------
def save_diffusers(folder, name, unet_sd, text_sd=None, *, peft_names=False):
    """What diffusers' trainers write: ``unet.<m>.lora.down.weight`` for attention layers and
    ``unet.<m>.lora_A.weight`` for the others (+ ``text_encoder.…lora_A.weight``); with ``peft_names``,
    ``lora_A``/``lora_B`` throughout (diffusers' own loader skips the ``lora.down`` layers of a mixed file
    whose first tensor is a ``lora_A`` one, so the reference is given that spelling)."""
    convert = (lambda sd: sd) if peft_names else convert_state_dict_to_diffusers
    KolorsPipeline.save_lora_weights(
        folder, weight_name=name, unet_lora_layers=convert(unet_sd),
        text_encoder_lora_layers=convert(text_sd) if text_sd else None)
    return folder / name


def to_kohya(unet_sd, text_sd, alpha_ratio=0.5):
    """kohya-ss names (``lora_unet_…``/``lora_te1_…``) with ``alpha = ratio * rank`` and up weights rescaled
    so that the LoRA does exactly what the diffusers-format one does."""
    prefixed = {f"unet.{k}": v for k, v in unet_sd.items()} | {f"text_encoder.{k}": v for k, v in text_sd.items()}
    state = convert_state_dict_to_kohya(prefixed)
    for key in [k for k in state if k.endswith(".alpha")]:
        base = key.removesuffix(".alpha")
        rank = state[f"{base}.lora_down.weight"].shape[0]
        state[key] = torch.tensor(alpha_ratio * rank)
        state[f"{base}.lora_up.weight"] = state[f"{base}.lora_up.weight"] / alpha_ratio
    return state


def halved(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The LoRA with its up (B) weights halved: the same LoRA once its alpha is doubled."""
    return {k: (v / 2 if ".lora_B." in k else v) for k, v in state.items()}


@pytest.fixture(scope="module")
def ours(tiny_kolors_diffusers):
    return load_pipeline(tiny_kolors_diffusers, device="cpu", dtype="float32")


@pytest.fixture
def pipe(ours):
    yield ours
    unload_lora(ours)


@pytest.fixture(scope="module")
def loras(ours, tmp_path_factory):
    """LoRA "a" (UNet + ChatGLM) and "b" (UNet only) in several formats."""
    root = tmp_path_factory.mktemp("loras")
    unet, text_encoder = ours.components.unet, ours.components.text_encoder
    a_unet, a_text = peft_lora(unet, UNET_TARGETS, 4, seed=1), peft_lora(text_encoder, TEXT_TARGETS, 2, seed=2)
    b_unet = peft_lora(unet, ["to_k", "to_v", "ff.net.2"], 2, seed=3)
    files = {
        "a": save_diffusers(root, "a.safetensors", a_unet, a_text),
        "a_unet": save_diffusers(root, "a_unet.safetensors", a_unet, peft_names=True),
        "b": save_diffusers(root, "b.safetensors", b_unet, peft_names=True),
        "a_kohya": root / "a_kohya.safetensors",
        "attn_kohya": root / "attn_kohya.safetensors",
        "attn_sgm": root / "attn_sgm.safetensors",
    }
    # alpha = 2 * rank stored in the LoraConfig that diffusers writes to the safetensors header (B halved)
    files["a_header_alpha"] = root / "a_header_alpha.safetensors"
    KolorsPipeline.save_lora_weights(
        root, weight_name=files["a_header_alpha"].name, unet_lora_layers=halved(a_unet),
        text_encoder_lora_layers=halved(a_text),
        unet_lora_adapter_metadata={"r": 4, "lora_alpha": 8, "target_modules": UNET_TARGETS},
        text_encoder_lora_adapter_metadata={"r": 2, "lora_alpha": 4, "target_modules": TEXT_TARGETS})
    kohya = to_kohya(a_unet, a_text)
    save_file(kohya, files["a_kohya"])
    attention = {k: v for k, v in kohya.items() if "_transformer_blocks_" in k}
    save_file(attention, files["attn_kohya"])
    sgm = {}
    for key, value in attention.items():
        for diffusers_name, sgm_name in SGM_BLOCKS.items():
            key = key.replace(f"lora_unet_{diffusers_name}_", f"lora_unet_{sgm_name}_")
        sgm[key] = value
    assert not any("attentions" in k for k in sgm)
    save_file(sgm, files["attn_sgm"])

    # The official Kolors DreamBooth checkpoint folder: diffusers UNet file + peft's text-encoder adapter,
    # here with lora_alpha = 2 * r (and B halved to compensate) to check that adapter_config.json is read.
    dreambooth = root / "checkpoint-1000"
    save_diffusers(dreambooth, "pytorch_lora_weights.safetensors", a_unet)
    adapter = {f"base_model.model.{k}": v for k, v in halved(a_text).items()}
    save_file(adapter, dreambooth / "adapter_model.safetensors")
    (dreambooth / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": TEXT_TARGETS}))
    files["dreambooth"] = dreambooth
    return {"files": files, "a_unet": a_unet, "a_text": a_text}


def generate(pipe, **kwargs) -> np.ndarray:
    return pipe(PROMPT, steps=STEPS, width=W, height=H, seed=SEED, guidance=5.0, progress=False, **kwargs).pixels


@pytest.fixture(scope="module")
def base_pixels(ours):
    return generate(ours)


@pytest.fixture(scope="module")
def reference(tiny_kolors_diffusers, loras, ours):
    """diffusers' KolorsPipeline with LoRA "a" (UNet through load_lora_weights; its ChatGLM part with peft,
    as Kolors' DreamBooth inference script does, since diffusers' loader cannot read ChatGLM LoRAs)."""
    ref = KolorsPipeline.from_pretrained(tiny_kolors_diffusers, variant="fp16", dtype=torch.float32)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = copy.deepcopy(ours.components.scheduler)
    ref.load_lora_weights(str(loras["files"]["a_unet"]), adapter_name="a")
    inject_adapter_in_model(LoraConfig(r=2, lora_alpha=2, target_modules=TEXT_TARGETS), ref.text_encoder, "a")
    set_peft_model_state_dict(ref.text_encoder, loras["a_text"], adapter_name="a")
    return ref


def reference_pixels(ref) -> np.ndarray:
    return ref(PROMPT, num_inference_steps=STEPS, guidance_scale=5.0, width=W, height=H, output_type="np",
               generator=torch.Generator("cpu").manual_seed(SEED)).images


# --- parity and formats ------------------------------------------------------------------------------------
def test_diffusers_format_matches_diffusers_reference(pipe, loras, reference, base_pixels):
    name = load_lora(pipe, loras["files"]["a"])
    assert name == "a"
    assert loaded_loras(pipe)[0].layers == {"unet": 48, "text_encoder": 4}
    got = generate(pipe)
    ref = reference_pixels(reference)
    assert np.abs(got - ref).max() <= 1 / 255
    assert np.abs(got - base_pixels).max() > 0.05  # the LoRA does change the image


def test_two_loras_match_diffusers_set_adapters(pipe, loras, reference):
    load_lora(pipe, loras["files"]["a"])
    load_lora(pipe, loras["files"]["b"], weight=0.7)
    both = generate(pipe)
    reference.load_lora_weights(str(loras["files"]["b"]), adapter_name="b")
    try:
        reference.set_adapters(["a", "b"], [1.0, 0.7])
        assert np.abs(both - reference_pixels(reference)).max() <= 1 / 255
    finally:
        reference.delete_adapters("b")
        reference.set_adapters(["a"], [1.0])
    unload_lora(pipe, "b")
    assert [lora.name for lora in loaded_loras(pipe)] == ["a"]
    only_a = generate(pipe)
    unload_lora(pipe)
    load_lora(pipe, loras["files"]["a"])
    assert np.abs(generate(pipe) - only_a).max() <= 1e-6
    assert np.abs(both - only_a).max() > 1e-3


@pytest.mark.parametrize("fmt", ["a_kohya", "a_header_alpha", "dreambooth"])
def test_other_formats_give_the_same_images(pipe, loras, fmt):
    load_lora(pipe, loras["files"]["a"])
    expected = generate(pipe)
    unload_lora(pipe)
    load_lora(pipe, loras["files"][fmt])
    assert loaded_loras(pipe)[0].layers == {"unet": 48, "text_encoder": 4}
    assert np.abs(generate(pipe) - expected).max() <= 1e-5


def test_sdxl_original_kohya_names_are_converted(pipe, loras):
    load_lora(pipe, loras["files"]["attn_kohya"])
    expected = generate(pipe)
    unload_lora(pipe)
    load_lora(pipe, loras["files"]["attn_sgm"])
    assert loaded_loras(pipe)[0].layers == {"unet": 36}
    assert np.abs(generate(pipe) - expected).max() <= 1e-6


# --- weights, fusing, unloading ----------------------------------------------------------------------------
def test_weights_fuse_and_unload(pipe, loras, base_pixels):
    unet = pipe.components.unet
    original = {k: v.clone() for k, v in unet.state_dict().items()}
    original_te = {k: v.clone() for k, v in pipe.components.text_encoder.state_dict().items()}
    name = load_lora(pipe, loras["files"]["a"], weight=0.5, name="mine")
    half = generate(pipe)
    set_lora_weights(pipe, {name: 1.0})
    full = generate(pipe)
    assert np.abs(half - full).max() > 1e-2
    set_lora_weights(pipe, {name: 0.0})
    assert np.abs(generate(pipe) - base_pixels).max() <= 1e-6

    set_lora_weights(pipe, {name: 1.0})
    fuse_lora(pipe)
    assert np.abs(generate(pipe) - full).max() <= 1e-3
    set_lora_weights(pipe, {name: 0.5})  # re-fuses at the new weight
    assert np.abs(generate(pipe) - half).max() <= 1e-3
    unfuse_lora(pipe)
    assert np.abs(generate(pipe) - half).max() <= 1e-6
    fuse_lora(pipe)
    unload_lora(pipe)  # while fused: the original weights come back exactly

    assert loaded_loras(pipe) == []
    assert np.array_equal(generate(pipe), base_pixels)
    after = unet.state_dict()
    assert after.keys() == original.keys() and all(torch.equal(after[k], original[k]) for k in original)
    after_te = pipe.components.text_encoder.state_dict()
    assert all(torch.equal(after_te[k], original_te[k]) for k in original_te)
    attn = unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1
    assert type(attn.to_q) is torch.nn.Linear


def test_parameters_and_hashes(pipe, loras):
    assert lora_parameters(pipe) == [] and a1111_lora_hashes(pipe) is None
    load_lora(pipe, loras["files"]["a"], weight=0.8)
    load_lora(pipe, loras["files"]["a"], weight=0.3)  # same file twice: a unique name
    params = lora_parameters(pipe)
    assert [p["name"] for p in params] == ["a", "a_2"]
    assert params[0]["file"] == "a.safetensors" and params[0]["weight"] == 0.8
    assert len(params[0]["sha256"]) == 10 and params[0]["sha256"] == params[1]["sha256"]
    json.dumps(params)
    assert a1111_lora_hashes(pipe).startswith("a: ")
    with pytest.raises(KolorsError, match="already loaded"):
        load_lora(pipe, loras["files"]["b"], name="a")
    with pytest.raises(KolorsError, match="no LoRA named"):
        set_lora_weights(pipe, {"nope": 1.0})


def test_parse_lora_spec():
    assert parse_lora_spec("style.safetensors") == ("style.safetensors", 1.0)
    assert parse_lora_spec("style.safetensors:0.6") == ("style.safetensors", 0.6)
    assert parse_lora_spec("C:\\loras\\style.safetensors:-.5") == ("C:\\loras\\style.safetensors", -0.5)
    assert parse_lora_spec("C:\\loras\\style.safetensors") == ("C:\\loras\\style.safetensors", 1.0)


# --- bad files ---------------------------------------------------------------------------------------------
def test_bad_files_raise_kolors_errors_and_leave_the_model_alone(pipe, loras, tmp_path, base_pixels):
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(KolorsError, match="missing.safetensors"):
        load_lora(pipe, missing)

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(KolorsError, match="corrupt.safetensors"):
        load_lora(pipe, corrupt)

    sd15 = tmp_path / "sd15_style.safetensors"  # kohya names of an SD 1.5 LoRA (CLIP text encoder, 320-wide)
    save_file({
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(4, 768),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(768, 4),
    }, sd15)
    with pytest.raises(KolorsError, match="sd15_style.safetensors is for a different base model"):
        load_lora(pipe, sd15)

    wrong_shapes = tmp_path / "wrong_shapes.safetensors"  # right names, another model's sizes
    module = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    save_file({f"{module}.lora.down.weight": torch.zeros(4, 640), f"{module}.lora.up.weight": torch.zeros(640, 4)},
              wrong_shapes)
    with pytest.raises(KolorsError, match="different base model.*do not fit"):
        load_lora(pipe, wrong_shapes)

    not_lora = tmp_path / "unet.safetensors"
    save_file({"conv_in.weight": torch.zeros(8, 4, 3, 3)}, not_lora)
    with pytest.raises(KolorsError, match="not a LoRA"):
        load_lora(pipe, not_lora)

    pickle = tmp_path / "a.bin"
    torch.save({k: v for k, v in to_kohya(loras["a_unet"], loras["a_text"]).items()}, pickle)
    with pytest.raises(KolorsError, match="pickle"):
        load_lora(pipe, pickle)

    assert loaded_loras(pipe) == []
    assert np.array_equal(generate(pipe), base_pixels)
    assert load_lora(pipe, pickle, allow_pickle=True) == "a"
