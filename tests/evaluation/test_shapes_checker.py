"""The automatic colour/shape checker against the generator's ground truth, and the held-out prompt file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from kolors.data import shapes as S
from kolors.evaluation import shapes_checker as C
from kolors.evaluation.heldout_prompts import DATA_FILE, load_heldout_prompts

N = 360  # ground-truth renders: 12 per (colour, shape), its backgrounds equally often


def degrade(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Mild Gaussian blur, Gaussian noise and a slight per-channel colour jitter (gain ±10%, offset ±15)."""
    blurred = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
    a = np.asarray(blurred, dtype=np.float32)
    a = a * (1 + rng.uniform(-0.1, 0.1, 3)) + rng.uniform(-15, 15, 3) + rng.normal(0, 8, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8))


@pytest.fixture(scope="module")
def truth():
    """(scene, clean 128 px image, degraded image) for N single-shape scenes (any combination, both splits')."""
    rng = np.random.default_rng(2024)
    combos = [(c, s) for c in S.COLOURS for s in S.SHAPES]
    out = []
    for i in range(N):
        colour, kind = combos[i % len(combos)]
        size, position = S.SIZES[int(rng.integers(3))], S.POSITIONS[int(rng.integers(9))]
        shape = S.place_shape(rng, (colour, kind, size, position))
        backgrounds = S.allowed_backgrounds({colour})
        scene = S.Scene(shapes=(shape,), background=backgrounds[(i // len(combos)) % len(backgrounds)])
        image = S.render(scene, 128)
        out.append((scene, image, degrade(image, rng)))
    return out


@pytest.fixture(scope="module")
def clean_detections(truth):
    return [C.check_image(image) for _, image, _ in truth]


def accuracy(detections, scenes) -> tuple[float, float]:
    colour = np.mean([d.colour == s.shapes[0].colour for d, s in zip(detections, scenes)])
    shape = np.mean([d.shape == s.shapes[0].shape for d, s in zip(detections, scenes)])
    return float(colour), float(shape)


def test_checker_reads_clean_renders(truth, clean_detections):
    scenes = [t[0] for t in truth]
    colour, shape = accuracy(clean_detections, scenes)
    assert colour >= 0.98 and shape >= 0.98, (colour, shape)
    size = np.mean([d.size == s.shapes[0].size for d, s in zip(clean_detections, scenes)])
    position = np.mean([d.position == s.shapes[0].position for d, s in zip(clean_detections, scenes)])
    assert size >= 0.95 and position >= 0.95, (size, position)


def test_checker_reads_blurred_noisy_colour_shifted_renders(truth):
    detections = [C.check_image(degraded) for _, _, degraded in truth]
    colour, shape = accuracy(detections, [t[0] for t in truth])
    assert colour >= 0.98 and shape >= 0.98, (colour, shape)


def test_checker_reads_64px_renders(truth):
    detections = [C.check_image(S.render(scene, 64)) for scene, _, _ in truth[::2]]
    colour, shape = accuracy(detections, [t[0] for t in truth[::2]])
    assert colour >= 0.98 and shape >= 0.98, (colour, shape)


def test_checker_tolerates_uneven_backgrounds(truth):
    """A linear gradient plus a vignette (a quarter darker in the corners), as generated images may have."""
    h = 128
    yy, xx = np.mgrid[0:h, 0:h] / h - 0.5
    gain = (1 - 0.5 * (xx**2 + yy**2))[..., None]
    ramp = (40 * yy)[..., None]
    sel = truth[::4]
    images = [np.clip(np.asarray(image, np.float32) * gain + ramp, 0, 255).astype(np.uint8) for _, image, _ in sel]
    detections = [C.check_image(a) for a in images]
    colour, shape = accuracy(detections, [t[0] for t in sel])
    assert colour >= 0.98 and shape >= 0.98, (colour, shape)


def test_shuffled_labels_score_at_chance(truth, clean_detections):
    scenes = [t[0] for t in truth]
    colours, shapes = [], []
    for seed in range(5):
        perm = np.random.default_rng(seed).permutation(len(scenes))
        colour, shape = accuracy(clean_detections, [scenes[j] for j in perm])
        colours.append(colour)
        shapes.append(shape)
    assert np.mean(colours) == pytest.approx(1 / len(S.COLOURS), abs=0.04)
    assert np.mean(shapes) == pytest.approx(1 / 3, abs=0.07)


def test_check_accepts_arrays_and_scene_forms(truth):
    scene, image, _ = truth[0]
    arr = np.asarray(image)
    sh = scene.shapes[0]
    assert C.check(arr, scene) == (True, True)
    assert C.check(arr.astype(np.float32) / 255, scene.to_dict()) == (True, True)
    assert C.check(np.moveaxis(arr, -1, 0), (sh.colour, sh.shape)) == (True, True)
    wrong_colour = next(c for c in S.COLOURS if c != sh.colour)
    wrong_shape = next(s for s in S.SHAPES if s != sh.shape)
    assert C.check(image, {"colour": wrong_colour, "shape": wrong_shape}) == (False, False)


def test_two_shape_scenes():
    rng = np.random.default_rng(11)
    scenes = []
    while len(scenes) < 60:
        scene = S.sample_scene(rng, "train")
        if len(scene.shapes) == 2:
            scenes.append(scene)
    results = [C.check(S.render(scene, 128), scene) for scene in scenes]
    assert np.mean([c for c, _ in results]) >= 0.98 and np.mean([s for _, s in results]) >= 0.98
    found = C.detect_shapes(S.render(scenes[0], 128))
    assert len(found) == 2
    assert {(d.colour, d.shape) for d in found} == {(s.colour, s.shape) for s in scenes[0].shapes}


def test_nothing_found_gives_empty_detection():
    for background in S.BACKGROUND_RGB.values():
        blank = Image.new("RGB", (128, 128), background)
        det = C.check_image(blank)
        assert not det.found and det.colour is None and det.shape is None
        assert C.check(blank, ("red", "circle")) == (False, False)
    # sparse noise specks are not a shape
    rng = np.random.default_rng(0)
    a = np.full((128, 128, 3), 255, np.uint8)
    ys, xs = rng.integers(0, 128, (2, 40))
    a[ys, xs] = (220, 40, 40)
    assert not C.check_image(a).found
    # a grey shape has a shape but no colour
    grey = S.render_array(S.Scene(shapes=(S.Shape("square", "red", "large", "center"),)), 128)
    grey[np.all(grey == S.COLOUR_RGB["red"], axis=-1)] = (90, 90, 90)
    det = C.check_image(grey)
    assert det.found and det.colour is None and det.shape == "square"


def test_evaluate_images_reports_accuracy_and_agreement():
    rows = [r for r in load_heldout_prompts() if r["pair_id"] < 24]
    records = [
        {**r, "image": S.render(S.Scene.from_dict(r["scene"]), 128), "seed": 0} for r in rows
    ]
    report = C.evaluate_images(records)
    assert set(report["languages"]) == {"en", "zh"}
    for lang in ("en", "zh"):
        assert report["languages"][lang]["n"] == 24
        assert report["languages"][lang]["colour"] == report["languages"][lang]["shape"] == 1.0
    assert report["agreement"] == {"pairs": 24, "colour": 1.0, "shape": 1.0, "both_correct": 1.0}
    # Chinese images of another (colour, shape) group (3 held-out combinations per group, in pair order):
    # zh accuracy and agreement drop, en does not
    zh = [r for r in records if r["lang"] == "zh"]
    shifted = [r for r in records if r["lang"] == "en"] + [
        {**r, "image": zh[(i + 3) % len(zh)]["image"]} for i, r in enumerate(zh)
    ]
    report = C.evaluate_images(shifted)
    assert report["languages"]["en"]["colour"] == 1.0
    assert report["languages"]["zh"]["both"] == 0.0
    assert report["agreement"]["both_correct"] == 0.0 and report["agreement"]["colour"] < 1.0


# ---------------------------------------------------------------------------------------------------------------
# the committed held-out prompt file


def test_heldout_prompt_file():
    assert DATA_FILE.is_file()
    rows = load_heldout_prompts()
    by_lang = {lang: [r for r in rows if r["lang"] == lang] for lang in S.LANGS}
    assert all(len(v) >= 200 for v in by_lang.values())
    pairs: dict[int, dict] = {}
    for r in rows:
        assert r["lang"] not in pairs.setdefault(r["pair_id"], {})
        pairs[r["pair_id"]][r["lang"]] = r
    keys = ("colour", "shape", "size", "position", "background", "scene")
    for pair in pairs.values():
        assert set(pair) == set(S.LANGS)
        assert all(pair["en"][k] == pair["zh"][k] for k in keys)
    first_colours = ("red", "green", "blue", "yellow")  # the first model's
    en_colour = {c: c for c in first_colours}
    zh_colour = {"red": "红", "green": "绿", "blue": "蓝", "yellow": "黄"}
    en_shape = {"circle": ("circle", "disk"), "square": ("square",), "triangle": ("triangle",)}
    zh_shape = {"circle": ("圆",), "square": ("方",), "triangle": ("三角",)}
    for r in rows:
        scene = S.Scene.from_dict(r["scene"])
        assert len(scene.shapes) == 1 and scene.shapes[0].combo in S.HELDOUT_COMBOS
        assert (r["colour"], r["shape"]) == (scene.shapes[0].colour, scene.shapes[0].shape)
        assert r["template"].startswith(f"{r['lang']}/heldout/")
        colour_words, shape_words = (en_colour, en_shape) if r["lang"] == "en" else (zh_colour, zh_shape)
        assert colour_words[r["colour"]] in r["prompt"]
        assert any(w in r["prompt"] for w in shape_words[r["shape"]])
        others = [c for c in first_colours if c != r["colour"]]
        assert not any(colour_words[c] in r["prompt"] for c in others)
    # every held-out combination and every held-out wording is used
    assert {S.Scene.from_dict(r["scene"]).shapes[0].combo for r in rows} == {
        c for c in S.HELDOUT_COMBOS if c[0] in first_colours}
    for lang in S.LANGS:
        assert len({r["template"] for r in by_lang[lang]}) == 8  # the first model's held-out wordings, all used
    assert all({"colour", "shape"} <= set(r["states"]) for r in rows)
