"""The synthetic shapes dataset: rendering, captions, the train / held-out split, files and batches."""

from __future__ import annotations

import itertools
import json
import re
import time

import numpy as np
import pytest
from PIL import Image

from kolors.data import shapes as S

# Word → attribute tables written independently of the module: the tests map caption words back to attributes.
EN_COLOUR = {"red": "red", "green": "green", "blue": "blue", "yellow": "yellow"}
EN_SHAPE = {"circle": "circle", "disk": "circle", "square": "square", "triangle": "triangle"}
EN_SIZE = {"small": "small", "little": "small", "medium": "medium", "medium-sized": "medium", "large": "large",
           "big": "large"}
ZH_COLOUR = {"红": "red", "绿": "green", "蓝": "blue", "黄": "yellow"}
ZH_SHAPE = {"圆": "circle", "正方形": "square", "方块": "square", "方形": "square", "三角": "triangle"}


def en_attrs(text: str) -> tuple[set, set, set]:
    words = re.findall(r"[a-z-]+", text)
    return ({EN_COLOUR[w] for w in words if w in EN_COLOUR}, {EN_SHAPE[w] for w in words if w in EN_SHAPE},
            {EN_SIZE[w] for w in words if w in EN_SIZE})


def zh_attrs(text: str) -> tuple[set, set]:
    colours = {v for k, v in ZH_COLOUR.items() if k in text}
    shapes = {ZH_SHAPE[m] for m in re.findall("正方形|方块|方形|圆|三角", text)}
    return colours, shapes


@pytest.fixture(scope="module")
def train_sample():
    rng = np.random.default_rng(0)
    scenes = [S.sample_scene(rng, "train") for _ in range(4000)]
    caps = [(S.caption_with_template(s, lang, rng), s) for s in scenes for lang in S.LANGS]
    return scenes, caps


@pytest.fixture(scope="module")
def heldout_sample():
    rng = np.random.default_rng(1)
    scenes = [S.sample_scene(rng, "heldout") for _ in range(1500)]
    caps = [(S.caption_with_template(s, lang, rng), s) for s in scenes for lang in S.LANGS]
    return scenes, caps


# ---------------------------------------------------------------------------------------------------------------
# rendering


def test_render_is_deterministic_rgb_and_sized():
    rng = np.random.default_rng(3)
    for _ in range(20):
        scene = S.sample_scene(rng)
        for size in (32, 64, 128, 256):
            a, b = S.render(scene, size), S.render(scene, size)
            assert a.mode == "RGB" and a.size == (size, size)
            assert np.array_equal(np.asarray(a), np.asarray(b))
            assert np.array_equal(np.asarray(a), S.render_array(scene, size))


def test_render_draws_the_scene_colours_where_the_shapes_are():
    for shape in S.SHAPES:
        for colour in S.COLOURS:
            for background in S.BACKGROUNDS:
                scene = S.Scene(shapes=(S.Shape(shape, colour, "medium", "center"),), background=background)
                arr = S.render_array(scene, 128)
                assert tuple(arr[64, 64]) == S.COLOUR_RGB[colour]
                assert tuple(arr[2, 2]) == tuple(arr[-3, -3]) == S.BACKGROUND_RGB[background]
    # fill ratios of the bounding box tell the shapes apart (circle π/4, square 1, triangle 1/2)
    fills = {}
    for shape in S.SHAPES:
        arr = S.render_array(S.Scene(shapes=(S.Shape(shape, "red", "large", "center"),)), 256)
        mask = np.abs(arr.astype(int) - 255).sum(-1) > 100
        ys, xs = np.nonzero(mask)
        fills[shape] = mask.sum() / ((np.ptp(xs) + 1) * (np.ptp(ys) + 1))
    assert fills["circle"] == pytest.approx(np.pi / 4, abs=0.03)
    assert fills["square"] == pytest.approx(1.0, abs=0.03)
    assert fills["triangle"] == pytest.approx(0.5, abs=0.03)


def test_shapes_stay_inside_and_two_shapes_do_not_overlap():
    rng = np.random.default_rng(4)
    two = 0
    for _ in range(3000):
        scene = S.sample_scene(rng)
        for sh in scene.shapes:
            (cx, cy), (hw, hh) = sh.centre(), sh.half_extent()
            assert 0 < cx - hw and cx + hw < 1 and 0 < cy - hh and cy + hh < 1
        if len(scene.shapes) == 2:
            two += 1
            a, b = scene.shapes
            assert a.position != b.position
            assert not S._overlap(a, b)
    assert 0.2 < two / 3000 < 0.4


def test_batch_is_deterministic_typed_and_fast():
    imgs, caps, scenes = S.batch(np.random.default_rng(5), 64, "train", 64)
    imgs2, caps2, scenes2 = S.batch(np.random.default_rng(5), 64, "train", 64)
    assert imgs.dtype == np.uint8 and imgs.shape == (64, 64, 64, 3)
    assert np.array_equal(imgs, imgs2) and caps == caps2 and scenes == scenes2
    assert len(caps) == len(scenes) == 64
    assert np.array_equal(imgs[7], S.render_array(scenes[7], 64))
    t0 = time.perf_counter()
    S.batch(np.random.default_rng(6), 300, "train", 128)
    rate = 300 / (time.perf_counter() - t0)
    assert rate > 200, f"{rate:.0f} images/s"  # ~1500/s on one core; lenient for shared CI machines


# ---------------------------------------------------------------------------------------------------------------
# scenes and captions


def test_scene_validation_and_round_trip():
    scene = S.Scene(shapes=[S.Shape("circle", "red", "small", "left", 0.01, -0.02)], background="beige")
    assert isinstance(scene.shapes, tuple)
    assert S.Scene.from_dict(scene.to_dict()) == scene
    assert S.Scene.from_dict(json.dumps(scene.to_dict())) == scene
    with pytest.raises(ValueError):
        S.Shape("hexagon", "red", "small", "left")
    with pytest.raises(ValueError):
        S.Shape("circle", "red", "small", "somewhere")
    with pytest.raises(ValueError):
        S.Scene(shapes=(), background="white")
    with pytest.raises(ValueError):
        S.Scene(shapes=(S.Shape("circle", "red", "small", "left"),), background="red")
    with pytest.raises(ValueError):
        S.caption(scene, "fr", np.random.default_rng(0))


def test_captions_name_the_right_colours_and_shapes(train_sample, heldout_sample):
    for (text, template), scene in train_sample[1] + heldout_sample[1]:
        colours = {s.colour for s in scene.shapes}
        kinds = {s.shape for s in scene.shapes}
        if template.startswith("en/"):
            c, k, z = en_attrs(text)
            assert z <= {s.size for s in scene.shapes}, text
        else:
            c, k = zh_attrs(text)
        assert c == colours, (text, scene)
        assert k == kinds, (text, scene)


def test_captions_are_varied_and_sometimes_minimal(train_sample):
    texts = {lang: [t for (t, tid), _ in train_sample[1] if tid.startswith(lang)] for lang in S.LANGS}
    for lang in S.LANGS:
        assert len(set(texts[lang])) > 1000
    templates = {tid for (_, tid), _ in train_sample[1]}
    assert len([t for t in templates if t.startswith("en/train")]) == len(S.TEMPLATES["en"]["train"])
    assert len([t for t in templates if t.startswith("zh/train")]) == len(S.TEMPLATES["zh"]["train"])
    assert "a red circle" in texts["en"]
    assert {"红色圆形", "一个红色的圆形", "红圆"} & set(texts["zh"])
    assert any(" and " in t for t in texts["en"]) and any("和" in t for t in texts["zh"])


def test_captions_of_a_scene_follow_its_split():
    rng = np.random.default_rng(7)
    scene = S.sample_scene(rng, "heldout")
    assert scene.split == "heldout" and len(scene.shapes) == 1
    assert S.caption_with_template(scene, "en", rng)[1].startswith("en/heldout/")
    assert S.caption_with_template(scene, "zh", rng, split="train")[1].startswith("zh/train/")


# ---------------------------------------------------------------------------------------------------------------
# the held-out split


def test_heldout_combos_are_balanced_and_never_trained_on(train_sample, heldout_sample):
    assert len(S.HELDOUT_COMBOS) == 36
    for colour, shape in itertools.product(S.COLOURS, S.SHAPES):
        held = [c for c in S.HELDOUT_COMBOS if c[:2] == (colour, shape)]
        assert sorted(c[2] for c in held) == sorted(S.SIZES)
    train_combos = {s.combo for scene in train_sample[0] for s in scene.shapes}
    assert not train_combos & S.HELDOUT_COMBOS
    # everything else is covered: every pair, size, position, background appears in training
    assert len(train_combos) == 4 * 3 * 3 * 9 - 36
    assert {scene.background for scene in train_sample[0]} == set(S.BACKGROUNDS)
    held = heldout_sample[0]
    assert all(len(s.shapes) == 1 and s.shapes[0].combo in S.HELDOUT_COMBOS for s in held)
    assert {s.shapes[0].combo for s in held} == S.HELDOUT_COMBOS


def test_heldout_wordings_never_appear_in_training(train_sample, heldout_sample):
    train_texts = {t for (t, tid), _ in train_sample[1]}
    assert all("/heldout/" not in tid for (_, tid), _ in train_sample[1])
    held_texts = {t for (t, tid), _ in heldout_sample[1]}
    assert all("/heldout/" in tid for (_, tid), _ in heldout_sample[1])
    assert not train_texts & held_texts


def _realisations(lang: str, group: str, scene: S.Scene) -> set[str]:
    """Every caption the templates of ``group`` can give a one-shape scene (all synonym choices)."""
    words = S.EN_WORDS if lang == "en" else S.ZH_WORDS
    sh = scene.shapes[0]
    options = {
        "col": words["colour"][sh.colour],
        "colL": words["colour"][sh.colour][:1],
        "shp": words["shape"][sh.shape],
        "sz": words["size"][sh.size],
        "pos": words["position"][sh.position],
        "bg": words["background"][scene.background],
    }
    out = set()
    for template in S.TEMPLATES[lang][group]:
        for values in itertools.product(*options.values()):
            out.add(template.format(**dict(zip(options, values))))
    return out


def test_heldout_wordings_cannot_be_produced_by_training_templates():
    # exhaustive over synonyms, for one scene per (colour, shape) × background
    for colour, shape, background in itertools.product(S.COLOURS, S.SHAPES, S.BACKGROUNDS):
        scene = S.Scene(shapes=(S.Shape(shape, colour, "small", "top-left"),), background=background)
        for lang in S.LANGS:
            assert not _realisations(lang, "train", scene) & _realisations(lang, "heldout", scene)


def test_heldout_wordings_only_use_training_vocabulary(train_sample, heldout_sample):
    def en_words(texts):
        return {w for t in texts for w in re.findall(r"[^\s,:]+", t)}

    train = [(t, tid) for (t, tid), _ in train_sample[1]]
    held = [(t, tid) for (t, tid), _ in heldout_sample[1]]
    held_en = en_words(t for t, tid in held if tid.startswith("en"))
    assert held_en <= en_words(t for t, tid in train if tid.startswith("en"))
    zh_chars = lambda pairs: {ch for t, tid in pairs if tid.startswith("zh") for ch in t}  # noqa: E731
    assert zh_chars(held) <= zh_chars(train)


# ---------------------------------------------------------------------------------------------------------------
# examples and files


def test_sample_example():
    image, en, zh, scene = S.sample_example(np.random.default_rng(8), "heldout", size=64)
    assert isinstance(image, Image.Image) and image.size == (64, 64)
    assert en_attrs(en)[0] == {scene.shapes[0].colour} and zh_attrs(zh)[0] == {scene.shapes[0].colour}


@pytest.mark.parametrize("lang", ["both", "en", "zh"])
def test_write_imagefolder(tmp_path, lang):
    out = S.write_imagefolder(tmp_path / "ds", n=12, seed=3, split="train", size=48, lang=lang)
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 12 and len({r["file_name"] for r in rows}) == 12
    for r in rows:
        assert r["file_name"].startswith("images/") and r["text"]
        image = Image.open(out / r["file_name"])
        assert image.size == (48, 48) and image.mode == "RGB"
        scene = S.Scene.from_dict(r["scene"])
        assert np.array_equal(np.asarray(image), S.render_array(scene, 48))
        assert r["text"] == r["text_" + r["lang"]]
        if lang != "both":
            assert r["lang"] == lang
    again = S.write_imagefolder(tmp_path / "ds2", n=12, seed=3, split="train", size=48, lang=lang)
    meta = (out / "metadata.jsonl").read_text(encoding="utf-8")
    assert (again / "metadata.jsonl").read_text(encoding="utf-8") == meta
