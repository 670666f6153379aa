"""Captioned examples of the shapes dataset: batches in memory, image folders on disk."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from kolors.data import examples as E
from kolors.data import shapes as S
from kolors.evaluation.shapes_checker import check


def test_sample_example():
    image, en, zh, scene = E.sample_example(np.random.default_rng(8), "heldout", size=64)
    assert isinstance(image, Image.Image) and image.size == (64, 64)
    assert scene.split == "heldout" and en.isascii() and any("\u4e00" <= ch <= "\u9fff" for ch in zh)


def test_batch_is_deterministic_typed_and_fast():
    imgs, caps, scenes = E.batch(np.random.default_rng(5), 64, "train", 64)
    imgs2, caps2, scenes2 = E.batch(np.random.default_rng(5), 64, "train", 64)
    assert imgs.dtype == np.uint8 and imgs.shape == (64, 64, 64, 3)
    assert np.array_equal(imgs, imgs2) and caps == caps2 and scenes == scenes2
    assert len(caps) == len(scenes) == 64
    assert np.array_equal(imgs[7], S.render_array(scenes[7], 64))
    t0 = time.perf_counter()
    E.batch(np.random.default_rng(6), 300, "train", 128)
    rate = 300 / (time.perf_counter() - t0)
    assert rate > 150, f"{rate:.0f} images/s"  # ~1000/s on one core; lenient for shared CI machines


@pytest.mark.parametrize("lang", ["both", "en", "zh"])
def test_write_imagefolder(tmp_path, lang):
    out = E.write_imagefolder(tmp_path / "ds", n=12, seed=3, split="train", size=48, lang=lang)
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 12 and len({r["file_name"] for r in rows}) == 12
    for r in rows:
        assert r["file_name"].startswith("images/") and r["text"]
        image = Image.open(out / r["file_name"])
        assert image.size == (48, 48) and image.mode == "RGB"
        scene = S.Scene.from_dict(r["scene"])
        assert np.array_equal(np.asarray(image), S.render_array(scene, 48))
        assert r["text"] == r["text_" + r["lang"]]
        assert all(check(S.render(scene, 128), scene))
        if lang != "both":
            assert r["lang"] == lang
    again = E.write_imagefolder(tmp_path / "ds2", n=12, seed=3, split="train", size=48, lang=lang)
    meta = (out / "metadata.jsonl").read_text(encoding="utf-8")
    assert (again / "metadata.jsonl").read_text(encoding="utf-8") == meta
