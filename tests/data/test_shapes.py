"""The synthetic shapes scenes: kinds, rendering, the train / held-out split."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pytest

from kolors.data import shapes as S
from kolors.evaluation.heldout_prompts import load_heldout_prompts


@pytest.fixture(scope="module")
def train_scenes():
    rng = np.random.default_rng(0)
    return [S.sample_scene(rng, "train") for _ in range(6000)]


@pytest.fixture(scope="module")
def heldout_scenes():
    rng = np.random.default_rng(1)
    return [S.sample_scene(rng, "heldout", kind) for kind in S.KINDS for _ in range(600)]


# ---------------------------------------------------------------------------------------------------------------
# rendering


def test_render_is_deterministic_rgb_and_sized(train_scenes):
    for scene in train_scenes[:20]:
        for size in (32, 64, 128, 256):
            a, b = S.render(scene, size), S.render(scene, size)
            assert a.mode == "RGB" and a.size == (size, size)
            assert np.array_equal(np.asarray(a), np.asarray(b))
            assert np.array_equal(np.asarray(a), S.render_array(scene, size))


def test_render_draws_the_scene_colours_where_the_shapes_are():
    for shape, colour in itertools.product(S.SHAPES, S.COLOURS):
        for background in S.allowed_backgrounds({colour}):
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


def test_colours_are_distinct_and_visible_on_their_backgrounds(train_scenes):
    rgb = np.array(list(S.COLOUR_RGB.values()), dtype=float)
    gaps = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(rgb)) * 1e9
    assert gaps.min() > 60
    for scene in train_scenes:
        for sh in scene.shapes:
            gap = np.linalg.norm(np.subtract(S.COLOUR_RGB[sh.colour], S.BACKGROUND_RGB[scene.background]))
            assert gap > 80, (sh.colour, scene.background)


# ---------------------------------------------------------------------------------------------------------------
# scenes


def test_kinds_counts_and_relations(train_scenes):
    kinds = Counter(s.kind for s in train_scenes)
    for kind, weight in S.KIND_WEIGHTS.items():
        assert kinds[kind] / len(train_scenes) == pytest.approx(weight, abs=0.03)
    counts = Counter(s.count for s in train_scenes if s.kind == "count")
    assert set(counts) == {1, 2, 3}
    relations = Counter(s.relation for s in train_scenes if s.kind == "pair")
    assert set(relations) == set(S.RELATIONS) and min(relations.values()) > 0.2 * kinds["pair"]
    for scene in train_scenes:
        assert scene.count == len(scene.shapes)
        if scene.kind == "count":
            assert len({(s.colour, s.shape, s.size) for s in scene.shapes}) == 1
        if scene.kind == "pair":
            a, b = scene.shapes
            assert (a.colour, a.shape) != (b.colour, b.shape)
            (ax, ay), (bx, by) = a.centre(), b.centre()
            dx, dy = bx - ax, by - ay  # the relation holds for the drawn centres, along its axis mostly
            expected = {"left": dx, "right": -dx, "above": dy, "below": -dy}[scene.relation]
            across = abs(dy) if scene.relation in ("left", "right") else abs(dx)
            assert expected > 0.15 and expected > across - 0.12


def test_shapes_stay_inside_in_their_own_cells_and_do_not_overlap(train_scenes):
    for scene in train_scenes:
        for sh in scene.shapes:
            (cx, cy), (hw, hh) = sh.centre(), sh.half_extent()
            assert 0 < cx - hw and cx + hw < 1 and 0 < cy - hh and cy + hh < 1
        assert len({s.position for s in scene.shapes}) == scene.count
        for a, b in itertools.combinations(scene.shapes, 2):
            assert not S._overlap(a, b)


def test_scene_validation_and_round_trip(train_scenes):
    scene = S.Scene(shapes=[S.Shape("circle", "red", "small", "left", 0.01, -0.02)], background="beige")
    assert isinstance(scene.shapes, tuple)
    assert S.Scene.from_dict(scene.to_dict()) == scene
    for s in train_scenes[:200]:
        assert S.Scene.from_dict(json.dumps(s.to_dict())) == s
    bad = [
        lambda: S.Shape("hexagon", "red", "small", "left"),
        lambda: S.Shape("circle", "cyan", "small", "left"),
        lambda: S.Shape("circle", "red", "small", "somewhere"),
        lambda: S.Scene(shapes=(), background="white"),
        lambda: S.Scene(shapes=(S.Shape("circle", "red", "small", "left"),), background="red"),
        lambda: S.Scene(shapes=(S.Shape("circle", "red", "small", "left"),) * 2, kind="single"),
        lambda: S.Scene(shapes=(S.Shape("circle", "red", "small", "left"), S.Shape("square", "red", "small", "top")),
                        kind="count"),
        lambda: S.Scene(shapes=(S.Shape("circle", "red", "small", "left"), S.Shape("square", "blue", "small", "right")),
                        kind="pair", relation="right"),
    ]
    for make in bad:
        with pytest.raises(ValueError):
            make()


def test_scenes_of_the_first_models_data_still_read():
    """Rows of the first model's held-out file and two-shape scenes without a kind (its training data)."""
    for row in load_heldout_prompts()[:20]:
        scene = S.Scene.from_dict(row["scene"])
        assert scene.kind == "single" and scene.shapes[0].colour == row["colour"]
    old_pair = {"shapes": [{"shape": "circle", "colour": "red", "size": "small", "position": "top-left"},
                           {"shape": "square", "colour": "blue", "size": "small", "position": "bottom-right"}],
                "background": "white", "split": "train"}
    scene = S.Scene.from_dict(old_pair)
    assert scene.kind == "pair" and scene.relation is None  # diagonal cells: no clear relation


# ---------------------------------------------------------------------------------------------------------------
# the held-out split


def test_heldout_combos_keep_the_first_models_and_are_balanced():
    assert len(S.HELDOUT_COMBOS) == 3 * len(S.COLOURS) * len(S.SHAPES)
    first_model = {S.Scene.from_dict(r["scene"]).shapes[0].combo for r in load_heldout_prompts()}
    assert len(first_model) == 36 and first_model <= S.HELDOUT_COMBOS
    for colour, shape in itertools.product(S.COLOURS, S.SHAPES):
        held = [c for c in S.HELDOUT_COMBOS if c[:2] == (colour, shape)]
        assert sorted(c[2] for c in held) == sorted(S.SIZES)
    assert Counter(c[3] for c in S.HELDOUT_COMBOS) == {p: len(S.COLOURS) for p in S.POSITIONS}
    triples = [(c, s, n) for c in S.COLOURS for s in S.SHAPES for n in (2, 3) if S.is_heldout_count(c, s, n)]
    assert 0.1 < len(triples) / 60 < 0.25 and {n for *_, n in triples} == {2, 3}
    objects = list(itertools.product(S.COLOURS, S.SHAPES))
    pairs = [(a, b) for a, b in itertools.permutations(objects, 2) if S.is_heldout_pair(a, b)]
    assert all(S.is_heldout_pair(b, a) for a, b in pairs) and 0.08 < len(pairs) / (30 * 29) < 0.2


def test_training_never_shows_a_heldout_combination(train_scenes):
    combos = {s.combo for scene in train_scenes for s in scene.shapes}
    assert not combos & S.HELDOUT_COMBOS
    assert len(combos) > 0.97 * (len(S.COLOURS) * len(S.SHAPES) * len(S.SIZES) * len(S.POSITIONS) - 90)
    for scene in train_scenes:
        a = scene.shapes[0]
        if scene.kind == "count":
            assert not S.is_heldout_count(a.colour, a.shape, scene.count)
        if scene.kind == "pair":
            assert not S.is_heldout_pair((a.colour, a.shape), (scene.shapes[1].colour, scene.shapes[1].shape))
    assert {scene.background for scene in train_scenes} == set(S.BACKGROUNDS)


def test_heldout_scenes_always_use_one(heldout_scenes):
    for scene in heldout_scenes:
        assert scene.split == "heldout"
        a = scene.shapes[0]
        if scene.kind == "single" or scene.count == 1:
            assert a.combo in S.HELDOUT_COMBOS
        elif scene.kind == "count":
            assert S.is_heldout_count(a.colour, a.shape, scene.count)
        else:
            assert S.is_heldout_pair((a.colour, a.shape), (scene.shapes[1].colour, scene.shapes[1].shape))
    singles = {s.shapes[0].combo for s in heldout_scenes if s.kind == "single"}
    assert len(singles) > 0.95 * len(S.HELDOUT_COMBOS)


def test_a_fixed_background_keeps_only_shapes_that_show_on_it():
    rng = np.random.default_rng(3)
    for background in S.BACKGROUNDS:
        for kind in S.KINDS:
            scenes = [S.sample_scene(rng, "train", kind=kind, background=background) for _ in range(30)]
            assert {s.background for s in scenes} == {background}
            assert all(background in S.allowed_backgrounds({sh.colour for sh in s.shapes}) for s in scenes)
            assert {s.kind for s in scenes} == {kind}
    with pytest.raises(ValueError, match="background must be one of"):
        S.sample_scene(rng, "train", background="teal")
