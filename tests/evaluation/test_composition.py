"""The composition checker validated on rendered ground truth before it is trusted with generated images.

Every metric (background, position, single, count, binding, relation, and colour/shape with ten colours) must be right on
≥ 98% of the generator's own renders, clean and degraded, and score at chance when prompts are shuffled against
images: as often as the shuffled prompts' true attributes happen to agree with the images'.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from kolors.data import shapes as S
from kolors.evaluation import shapes_checker as C
from kolors.evaluation.composition import METRICS, score, summarise, wilson
from kolors.evaluation.heldout_prompts import CATEGORY_PAIRS, build_composition_prompts, load_composition_prompts

N_PER_CATEGORY = 40


def degrade(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Mild Gaussian blur, Gaussian noise and a slight per-channel colour jitter (gain ±8%, offset ±12)."""
    blurred = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.2))))
    a = np.asarray(blurred, dtype=np.float32)
    a = a * (1 + rng.uniform(-0.08, 0.08, 3)) + rng.uniform(-12, 12, 3) + rng.normal(0, 6, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8))


def truth(scene: S.Scene, expects: dict) -> dict[str, bool]:
    """What a perfect checker says of ``scene``'s image against ``expects``: from the scene itself."""
    shapes = sorted(scene.shapes, key=lambda s: -np.prod(s.half_extent()))
    if "objects" in expects:
        a, b = (tuple(o) for o in expects["objects"])
        pairs = [(x, y) for x in scene.shapes for y in scene.shapes
                 if x is not y and (x.colour, x.shape) == a and (y.colour, y.shape) == b]
        out = {"binding": bool(pairs)}
        gap = lambda x, y: {"left": y.centre()[0] - x.centre()[0], "right": x.centre()[0] - y.centre()[0],  # noqa: E731
                            "above": y.centre()[1] - x.centre()[1], "below": x.centre()[1] - y.centre()[1]}
        out["relation"] = any(gap(x, y)[expects["relation"]] >= 0.1 for x, y in pairs)
        return out
    if "count" in expects:
        return {"count": scene.count == expects["count"]}
    top = shapes[0]
    out = {"colour": top.colour == expects["colour"], "shape": top.shape == expects["shape"]}
    if "background" in expects:
        out["background"] = scene.background == expects["background"]
    if "position" in expects:
        out["position"] = top.position == expects["position"]
    out["single"] = scene.count == 1
    return out


@pytest.fixture(scope="module")
def cases():
    """(scene, expects, clean render, degraded render): fresh held-out prompts of every category."""
    rows = build_composition_prompts({c: N_PER_CATEGORY for c in CATEGORY_PAIRS}, seed=7)
    rng = np.random.default_rng(3)
    out = []
    for row in rows[::2]:  # the scene of each pair once
        scene = S.Scene.from_dict(row["scene"])
        image = S.render(scene, 128)
        out.append((scene, row["expects"], image, degrade(image, rng)))
    return out


def rates(records) -> dict[str, float]:
    report = summarise({"lang": "en", "scores": r} for r in records)
    return {m: v["en"]["rate"] for m, v in report.items()}


@pytest.mark.parametrize("which", [2, 3], ids=["clean", "degraded"])
def test_every_metric_reads_the_generators_own_images(cases, which):
    got = rates(score(case[which], case[1]) for case in cases)
    assert set(got) == set(METRICS)
    assert all(v >= 0.98 for v in got.values()), got


def test_metrics_score_at_chance_on_shuffled_prompts(cases):
    rng = np.random.default_rng(0)
    by_category: dict[str, list] = {}
    for case in cases:
        by_category.setdefault(tuple(sorted(case[1])), []).append(case)
    checker, perfect = [], []
    for group in by_category.values():
        for _ in range(3):
            perm = rng.permutation(len(group))
            for case, other in zip(group, (group[j] for j in perm)):
                checker.append(score(case[2], other[1]))
                perfect.append(truth(case[0], other[1]))
    got, chance = rates(checker), rates(perfect)
    for metric in METRICS:
        assert got[metric] == pytest.approx(chance[metric], abs=0.03), (metric, got[metric], chance[metric])
    assert chance["background"] < 0.4 and chance["position"] < 0.2 and chance["count"] < 0.45
    assert chance["binding"] < 0.1 and chance["colour"] < 0.2


def test_ten_colours_on_every_background_and_achromatic_shapes():
    for colour in S.COLOURS:
        for background in S.allowed_backgrounds({colour}):
            image = S.render(S.Scene(shapes=(S.Shape("square", colour, "small", "top"),), background=background))
            det = C.check_image(image)
            assert (det.colour, C.read_background(image)) == (colour, background)
    grey = np.full((64, 64, 3), 255, np.uint8)
    grey[20:44, 20:44] = (128, 128, 128)
    assert C.check_image(grey).colour is None  # mid grey is no colour of the dataset
    assert C.read_background(np.full((64, 64, 3), (40, 90, 200), np.uint8)) is None  # a blue border: no background


def test_count_ignores_specks_and_relations_need_a_margin():
    scene = S.Scene(shapes=(S.Shape("circle", "red", "small", "left"), S.Shape("circle", "red", "small", "right"),
                            S.Shape("circle", "red", "small", "top")), kind="count")
    image = S.render_array(scene, 128)
    assert C.count_shapes(image) == 3
    image[100:104, 100:104] = S.COLOUR_RGB["red"]  # a 16-pixel speck
    assert C.count_shapes(image) == 3
    a, b = C.Detection(shape="circle", centre=(0.40, 0.5)), C.Detection(shape="circle", centre=(0.55, 0.5))
    assert C.relation_holds(a, b, "left") and not C.relation_holds(b, a, "left")
    assert not C.relation_holds(a, C.Detection(centre=(0.45, 0.9)), "left") and C.relation_holds(a, b, "left")
    assert C.find_objects([a], [(None, "circle"), (None, "circle")]) is None


def test_a_prompt_for_one_object_fails_single_when_two_are_drawn():
    expects = {"colour": "red", "shape": "circle", "background": "white"}
    one = S.Scene(shapes=(S.Shape("circle", "red", "medium", "center"),), background="white")
    two = S.Scene(shapes=(S.Shape("circle", "red", "medium", "left"), S.Shape("circle", "red", "medium", "right")),
                  background="white", kind="count")
    assert score(S.render(one), expects) == {"colour": True, "shape": True, "background": True, "single": True}
    # the largest shape is still a red circle on white: only `single` tells that the prompt's "one" was not kept
    assert score(S.render(two), expects) == {"colour": True, "shape": True, "background": True, "single": False}


def test_wilson_interval():
    lo, hi = wilson(85, 100)
    assert lo == pytest.approx(0.767, abs=0.002) and hi == pytest.approx(0.907, abs=0.002)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def test_committed_composition_prompts():
    rows = load_composition_prompts()
    assert rows == build_composition_prompts()  # the file is what the builder makes (never edited by hand)
    for category, pairs in CATEGORY_PAIRS.items():
        mine = [r for r in rows if r["category"] == category]
        assert len(mine) == 2 * pairs and {r["lang"] for r in mine} == set(S.LANGS)
        assert all(r["template"].split("/")[1] == "heldout" for r in mine)
    by_pair: dict[int, list] = {}
    for r in rows:
        by_pair.setdefault(r["pair_id"], []).append(r)
    for en, zh in by_pair.values():
        assert (en["lang"], zh["lang"]) == ("en", "zh")
        assert en["scene"] == zh["scene"] and en["expects"] == zh["expects"]
        scene = S.Scene.from_dict(en["scene"])
        assert truth(scene, en["expects"]) == {m: True for m in truth(scene, en["expects"])}
    positions = [r["expects"]["position"] for r in rows if r["category"] == "position"]
    counts = [r["expects"]["count"] for r in rows if r["category"] == "count"]
    relations = [r["expects"]["relation"] for r in rows if r["category"] == "pair"]
    assert set(positions) == set(S.POSITIONS) and set(counts) == {1, 2, 3} and set(relations) == set(S.RELATIONS)
    assert all(a[0] != b[0] for a, b in (r["expects"]["objects"] for r in rows if r["category"] == "pair"))
    assert {r["expects"]["colour"] for r in rows if "colour" in r["expects"]} == set(S.COLOURS)
