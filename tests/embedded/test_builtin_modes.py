"""What the lossy run modes cost on the built-in model (full numbers: benchmarks/embedded_modes.py)."""

from __future__ import annotations

import statistics

import pytest

from kolors import load_pipeline
from kolors.evaluation.image_metrics import psnr, ssim
from kolors.evaluation.shapes_checker import check_image

PROMPTS = [("a red circle", "red"), ("一个绿色的正方形", "green"), ("a blue triangle", "blue"),
           ("一个黄色的圆形", "yellow")]


@pytest.fixture(scope="module")
def exact():
    return [load_pipeline(None, device="cpu")(p, seed=0, progress=False) for p, _ in PROMPTS]


@pytest.mark.parametrize("kwargs", [{"mode": "fast"}, {"text_encoder_quant": "int8"}], ids=["fast", "int8"])
def test_lossy_modes_keep_the_images(exact, kwargs):
    pipe = load_pipeline(None, device="cpu", **kwargs)
    results = [pipe(p, seed=0, progress=False) for p, _ in PROMPTS]
    colours = [check_image(r.images[0]).colour for r in results]
    assert sum(got == want for got, (_, want) in zip(colours, PROMPTS)) >= len(PROMPTS) - 1, colours
    similarity = [ssim(r.pixels[0], e.pixels[0]) for r, e in zip(results, exact)]
    closeness = [psnr(r.pixels[0], e.pixels[0]) for r, e in zip(results, exact)]
    assert statistics.median(similarity) >= 0.85 and statistics.median(closeness) >= 25, (similarity, closeness)
    if kwargs.get("mode") == "fast":
        assert results[0].parameters[0]["steps"] < exact[0].parameters[0]["steps"]
