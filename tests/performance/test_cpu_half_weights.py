"""Half-precision weights on a CPU without half-precision matmuls: stored in bf16, computed in fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kolors.performance import cpu
from kolors.pipelines.legacy import Text2ImagePipeline

FAST = dict(width=32, height=32, steps=3, seed=7, progress=False)


@pytest.mark.parametrize(("fast", "expected"), [(False, torch.float32), (True, torch.bfloat16)])
def test_compute_dtype_follows_the_cpu(monkeypatch, fast, expected):
    monkeypatch.setattr(cpu, "has_fast_half_matmul", lambda dtype: fast)
    assert cpu.compute_dtype(torch.device("cpu"), torch.bfloat16) == expected
    assert cpu.compute_dtype(torch.device("cpu"), torch.float32) == torch.float32
    assert cpu.compute_dtype(torch.device("cuda"), torch.bfloat16) == torch.bfloat16


def test_bf16_weights_stay_bf16_and_compute_in_fp32(monkeypatch, tiny_kolors_diffusers):
    monkeypatch.setattr(cpu, "has_fast_half_matmul", lambda dtype: False)
    pipe = Text2ImagePipeline.from_pretrained(tiny_kolors_diffusers, device="cpu", dtype="bfloat16")
    result = pipe("a red circle", **FAST)
    assert pipe.dtype == torch.float32 and result.parameters[0]["dtype"] == "bfloat16"
    unet, te = pipe.components.unet, pipe.components.text_encoder
    linears = [m for m in [*unet.modules(), *te.modules()] if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)  # back to storage after the run
    norms = [m for m in unet.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)
    assert next(pipe.components.vae.parameters()).dtype == torch.float32

    reference = Text2ImagePipeline.from_pretrained(tiny_kolors_diffusers, device="cpu")("a red circle", **FAST)
    mse = float(np.mean((result.pixels - reference.pixels) ** 2))
    assert 10 * np.log10(1 / max(mse, 1e-12)) > 35  # only the weights' bf16 rounding differs from fp32
