"""Run modes on CPU: what each one switches on, that the exact levers keep the math, and how modes are recorded.

The GPU-only parts (fp8, torch.compile, layer streaming to a device) are measured by benchmarks/gpu_all.py.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from kolors.cli.main import main
from kolors.errors import KolorsError
from kolors.metadata import read_parameters, read_png_text
from kolors.performance import enable_vae_tiling, settings_for
from kolors.performance.compile import fuse_attention
from kolors.performance.offload import is_streamed, stream_layers
from kolors.pipelines.legacy import Text2ImagePipeline

FAST = dict(width=32, height=32, steps=3, seed=7, progress=False)


@pytest.fixture(scope="module")
def exact(tiny_kolors_diffusers):
    return Text2ImagePipeline.from_pretrained(tiny_kolors_diffusers, device="cpu")


@pytest.fixture(scope="module")
def exact_image(exact):
    return exact("a red circle", **FAST).pixels


def test_each_mode_switches_on_what_it_documents():
    assert settings_for("exact") == settings_for()
    low = settings_for("low-memory")
    assert (low.offload, low.text_encoder_quant, low.vae_tiling) == ("model", "int8", False)
    seq = settings_for("sequential")
    assert (seq.offload, seq.text_encoder_quant, seq.vae_tiling) == ("sequential", "none", True)
    fast = settings_for("fast")
    assert (fast.scheduler, fast.fp8, fast.compile) == ("dpmpp_2m", True, True)
    assert fast.default_steps(50) == 25 and fast.default_steps(25) == 13 and fast.default_steps(4) == 4
    assert settings_for("low-memory", text_encoder_quant="int4").text_encoder_quant == "int4"
    with pytest.raises(KolorsError, match="unknown mode 'turbo': use one of exact, fast, low-memory, sequential"):
        settings_for("turbo")
    with pytest.raises(KolorsError, match="unknown text encoder quantisation 'int2'"):
        settings_for(text_encoder_quant="int2")


def test_text_encoder_is_loaded_without_its_unused_head(exact, reference_pipeline):
    assert exact.components.text_encoder.output_layer is None
    assert reference_pipeline.text_encoder.output_layer is not None  # the published weights do have it


def test_low_memory_mode_quantises_the_text_encoder_and_offloads_without_tiling(tiny_kolors_diffusers):
    pipe = Text2ImagePipeline.from_pretrained(tiny_kolors_diffusers, device="cpu", mode="low-memory")
    layer = pipe.components.text_encoder.encoder.layers[0].self_attention.query_key_value
    assert "Int8" in type(layer.weight).__name__  # a torchao int8 tensor
    assert pipe.offload and not pipe.components.vae.use_tiling
    assert pipe("a red circle", **FAST).parameters[0]["mode"] == "low-memory"


def test_int8_text_encoder_changes_the_image_only_slightly(tiny_kolors_diffusers, exact_image):
    pipe = Text2ImagePipeline.from_pretrained(tiny_kolors_diffusers, device="cpu", text_encoder_quant="int8")
    diff = np.abs(pipe("a red circle", **FAST).pixels - exact_image).max()
    assert 0 < diff < 0.05, diff  # rounding of the weights: a small, non-zero change (0.013 measured)


def test_int4_text_encoder_is_recorded(tiny_kolors_diffusers, exact_image):
    pipe = Text2ImagePipeline.from_pretrained(tiny_kolors_diffusers, device="cpu", text_encoder_quant="int4")
    result = pipe("a red circle", **FAST)
    assert result.parameters[0]["text_encoder_quant"] == "int4" and "mode" not in result.parameters[0]
    assert np.abs(result.pixels - exact_image).max() < 0.2


def test_fast_mode_halves_the_default_steps_with_dpmpp_2m(tiny_kolors_diffusers, exact):
    pipe = Text2ImagePipeline.from_pretrained(tiny_kolors_diffusers, device="cpu", mode="fast")
    params = pipe("a red circle", width=32, height=32, seed=1, progress=False).parameters[0]
    assert (params["steps"], params["scheduler"], params["mode"]) == (
        settings_for("fast").default_steps(exact.defaults.steps), "dpmpp_2m", "fast")
    asked = pipe("a red circle", width=32, height=32, seed=1, steps=3, scheduler="euler", progress=False)
    assert (asked.parameters[0]["steps"], asked.parameters[0]["scheduler"]) == (3, "euler")
    same = exact("a red circle", width=32, height=32, seed=1, steps=3, scheduler="euler", progress=False)
    np.testing.assert_array_equal(asked.pixels, same.pixels)  # no fp8/compile on CPU: the same math


def test_fast_mode_walks_every_other_timestep_of_exact_mode(tiny_kolors_diffusers, exact):
    from kolors.schedulers import make_scheduler

    pipe = Text2ImagePipeline.from_pretrained(tiny_kolors_diffusers, device="cpu", mode="fast")
    reference = make_scheduler("default", exact.components.scheduler)
    reference.set_timesteps(exact.defaults.steps)
    scheduler = make_scheduler("dpmpp_2m", pipe.components.scheduler)
    from kolors import GenerationRequest
    from kolors.pipelines.tasks import text_to_image

    steps = pipe.settings.default_steps(exact.defaults.steps)
    plan = text_to_image(pipe, pipe.resolve(GenerationRequest("a", width=32, height=32)))
    _, timesteps = plan.start(scheduler, [torch.Generator().manual_seed(0)], steps)
    assert timesteps.tolist() == reference.timesteps[::2].tolist()  # same first (noisiest) step as exact mode
    _, own = plan.start(scheduler, [torch.Generator().manual_seed(0)], 3)
    assert len(own) == 3  # a step count of the user's own: the sampler's own schedule


def test_layer_streaming_hooks_keep_the_image(exact, exact_image, tiny_kolors_diffusers):
    pipe = Text2ImagePipeline.from_pretrained(tiny_kolors_diffusers, device="cpu")
    for module in (pipe.components.unet, pipe.components.text_encoder, pipe.components.vae):
        stream_layers(module, torch.device("cpu"))
        assert is_streamed(module)
    assert not is_streamed(exact.components.unet)
    np.testing.assert_array_equal(pipe("a red circle", **FAST).pixels, exact_image)


def test_fused_attention_projections_keep_the_unet_output(tiny_kolors_diffusers):
    pipe = Text2ImagePipeline.from_pretrained(tiny_kolors_diffusers, device="cpu")
    before = pipe("a red circle", **FAST).pixels
    assert fuse_attention(pipe.components.unet)
    assert any(hasattr(m, "to_qkv") for m in pipe.components.unet.modules())
    np.testing.assert_allclose(pipe("a red circle", **FAST).pixels, before, atol=1e-5)


def test_fusion_is_skipped_when_adapters_are_loaded(tiny_kolors_diffusers, tmp_path):
    from peft import LoraConfig

    pipe = Text2ImagePipeline.from_pretrained(tiny_kolors_diffusers, device="cpu")
    pipe.components.unet.add_adapter(LoraConfig(r=2, target_modules=["to_q", "to_k", "to_v"]))
    assert not fuse_attention(pipe.components.unet)
    assert not any(hasattr(m, "to_qkv") for m in pipe.components.unet.modules())


def test_fusion_is_skipped_when_weights_are_quantised(tiny_kolors_diffusers):
    # fast mode's fp8 layers (torchao tensors) cannot be concatenated into a fused projection; int8 is the same
    # kind of weight and runs on a CPU
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    pipe = Text2ImagePipeline.from_pretrained(tiny_kolors_diffusers, device="cpu")
    attention = lambda m, fqn: isinstance(m, torch.nn.Linear) and ".attn1.to_" in f".{fqn}"  # noqa: E731
    quantize_(pipe.components.unet, Int8WeightOnlyConfig(), filter_fn=attention)
    assert not fuse_attention(pipe.components.unet)
    assert not any(hasattr(m, "to_qkv") for m in pipe.components.unet.modules())
    assert pipe("a red circle", **FAST).pixels.shape == (1, 32, 32, 3)


def test_tiled_decoding_runs_only_above_the_tile_size(exact, monkeypatch):
    vae = exact.components.vae
    calls = []
    monkeypatch.setattr(vae, "tiled_decode", lambda z, **kw: calls.append(z.shape) or type(vae).tiled_decode(vae, z, **kw))
    monkeypatch.setattr(vae, "use_tiling", False)
    monkeypatch.setattr(vae, "tile_sample_min_size", vae.tile_sample_min_size)
    monkeypatch.setattr(vae, "tile_latent_min_size", vae.tile_latent_min_size)
    enable_vae_tiling(vae, tile=16)
    assert (vae.tile_sample_min_size, vae.tile_latent_min_size) == (16, 16 // exact.vae_scale_factor)
    image = exact("a red circle", **{**FAST, "width": 48, "height": 32}).pixels
    assert image.shape == (1, 32, 48, 3) and calls == [(1, 4, 32 // exact.vae_scale_factor, 48 // exact.vae_scale_factor)]
    exact("a red circle", **{**FAST, "width": 16, "height": 16})
    assert len(calls) == 1  # a 16-px image fits one tile: decoded whole


def test_cli_records_and_replays_the_mode(tiny_kolors_diffusers, tmp_path, capsys):
    out = tmp_path / "a.png"
    args = ["generate", "a red circle", "--model", tiny_kolors_diffusers, "--width", "32", "--height", "32",
            "--seed", "3", "--mode", "fast", "-o", out, "--quiet"]
    assert main([str(a) for a in args]) == 0
    params = read_parameters(out)
    assert (params["mode"], params["scheduler"]) == ("fast", "dpmpp_2m")
    assert "Kolors mode: fast" in read_png_text(out)["parameters"]
    again = tmp_path / "b.png"
    assert main(["generate", "--from-image", str(out), "-o", str(again), "--quiet"]) == 0
    replayed = read_parameters(again)
    assert (replayed["mode"], replayed["steps"]) == ("fast", params["steps"])


def test_quantisation_without_torchao_is_a_one_line_error(tiny_kolors_diffusers, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao -> ImportError
    code = main(["generate", "a red circle", "--model", str(tiny_kolors_diffusers), "--width", "32", "--height",
                 "32", "--text-encoder-quant", "int8", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert err[-1] == ('kolors: error: --text-encoder-quant int8 needs torchao: pip install "kolors[quant]" '
                       '(or pip install torchao)')


def test_the_cli_parser_does_not_import_torch():
    code = "import sys, kolors.cli.main as m; m.build_parser(); print(sorted({'torch', 'diffusers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_fp8_falls_back_to_the_unet_as_it_is_where_a_trial_layer_fails(exact, caplog):
    from kolors.performance.quantize import _token_linear, quantize_unet_fp8

    unet = exact.components.unet
    assert any(_token_linear(m, n) for n, m in unet.named_modules())
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    assert quantize_unet_fp8(unet) == []  # no fp8 tensor cores on this CPU: the trial layer fails
    assert "fp8 matmuls are not available here" in caplog.text
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())
