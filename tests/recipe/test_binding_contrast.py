"""--binding-contrast: the pool's exchanged captions and the hinge that asks the model to tell them apart."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from kolors.data.captions import EN_WORDS, ZH_WORDS
from kolors.data.shapes import COLOURS, SHAPES, Scene, SceneMix, Shape, exchange_colours, one_shape, sample_scene
from kolors.recipe.pool import caption_and_twin, placed_caption, render_pool
from kolors.recipe.run import run

from test_recipe import _short_run


def test_exchanging_colours_keeps_every_shape_and_place_and_refuses_a_pair_of_one_colour():
    pair = Scene(shapes=(Shape("circle", "red", "medium", "left"), Shape("square", "blue", "small", "right")),
                 kind="pair", relation="left")
    (a, b) = exchange_colours(pair).shapes
    assert (a.shape, a.colour, a.position, b.shape, b.colour, b.position) == \
        ("circle", "blue", "left", "square", "red", "right")
    same_shape = Scene(shapes=(Shape("circle", "red", "medium", "left"), Shape("circle", "blue", "small", "right")),
                       kind="pair", relation="left")
    assert [s.colour for s in exchange_colours(same_shape).shapes] == ["blue", "red"]
    same_colour = Scene(shapes=(Shape("circle", "red", "medium", "left"), Shape("square", "red", "small", "right")),
                        kind="pair", relation="left")
    single = Scene(shapes=(Shape("circle", "red", "medium", "left"),))
    assert exchange_colours(same_colour) is None and exchange_colours(single) is None


def test_one_shape_gives_both_objects_the_kept_objects_shape_and_refuses_a_pair_of_one_shape():
    pair = Scene(shapes=(Shape("circle", "red", "medium", "left"), Shape("square", "blue", "small", "right")),
                 kind="pair", relation="left")
    for keep, kind in ((0, "circle"), (1, "square")):
        (a, b) = one_shape(pair, keep).shapes
        assert (a.shape, a.colour, a.position, b.shape, b.colour, b.position) == \
            (kind, "red", "left", kind, "blue", "right")
        assert one_shape(pair, keep).relation == "left"
    same_shape = Scene(shapes=(Shape("circle", "red", "medium", "left"), Shape("circle", "blue", "small", "right")),
                       kind="pair", relation="left")
    single = Scene(shapes=(Shape("circle", "red", "medium", "left"),))
    assert one_shape(same_shape, 0) is None and one_shape(single, 0) is None


def _shape_words(text: str) -> list[str]:
    """The shapes an English caption names, in order."""
    words = {w: s for s in SHAPES for w in EN_WORDS["shape"][s]}
    return [words[w] for w in re.findall(r"[a-z]+", text) if w in words]


def _colour_words(text: str) -> list[str]:
    """The first two colours an English caption names (its objects'; a background comes after them in every
    English wording of a pair)."""
    words = {w: c for c in COLOURS for w in EN_WORDS["colour"][c]}
    return [words[w] for w in re.findall(r"[a-z]+", text) if w in words][:2]


def _says_where(text: str, lang: str) -> bool:
    """Whether a pair caption says where its objects are (a relation or a place)."""
    vocabulary = EN_WORDS if lang == "en" else ZH_WORDS
    return any(w in text for group in ("relation", "position") for words in vocabulary[group].values() for w in words)


def test_a_twin_is_the_same_wording_with_the_colours_on_the_other_objects_and_draws_nothing_extra():
    """Every caption that tells the two objects apart — by shape, or by where each one is — gets a twin with the
    colours exchanged; "a red circle and a blue circle" means what its exchange means, and is its own twin."""
    rng = np.random.default_rng(0)
    pairs = same_wording = unplaced_same_shape = 0
    for i in range(400):
        scene = sample_scene(rng, "train")
        seed, stated = int(rng.integers(2**31)), (0.85, 0.0)[i % 2]
        for lang in ("en", "zh"):
            text, twin = caption_and_twin(scene, lang, r := np.random.default_rng(seed), stated)
            after_twin = r.integers(2**31)
            # the caption alone, from the same state: the same text, and the stream left where the twin left it
            alone = np.random.default_rng(seed)
            assert placed_caption(scene, lang, alone, stated) == text and alone.integers(2**31) == after_twin
            if exchange_colours(scene) is None:
                assert twin == text
                continue
            first, second = scene.shapes
            if first.shape == second.shape and not _says_where(text, lang):
                assert twin == text, text
                unplaced_same_shape += 1
                continue
            assert twin != text
            if lang == "en":
                pairs += 1
                assert _colour_words(text) == [first.colour, second.colour]
                assert _colour_words(twin) == [second.colour, first.colour]
                words = [sorted(re.sub(r"\ban\b", "a", t).split()) for t in (text, twin)]  # a/an follow the colour
                same_wording += words[0] == words[1]
    assert pairs > 60 and same_wording / pairs > 0.9 and unplaced_same_shape > 0, (pairs, same_wording, unplaced_same_shape)


def test_a_one_shape_twin_names_one_of_the_two_shapes_for_both_objects_and_draws_nothing_extra():
    rng = np.random.default_rng(1)
    pairs = kept = 0
    for _ in range(300):
        scene = sample_scene(rng, "train")
        seed, keep = int(rng.integers(2**31)), int(rng.integers(2))
        for lang in ("en", "zh"):
            text, twin = caption_and_twin(scene, lang, r := np.random.default_rng(seed), 0.85, twin="one-shape",
                                          keep=keep)
            alone = np.random.default_rng(seed)
            assert placed_caption(scene, lang, alone, 0.85) == text and alone.integers(2**31) == r.integers(2**31)
            if one_shape(scene, keep) is None:  # not a pair, or a pair of one shape
                assert twin == text
                continue
            assert twin != text
            if lang == "en":
                pairs += 1
                first, second = scene.shapes
                assert _shape_words(text) == [first.shape, second.shape], text
                assert _shape_words(twin) == [scene.shapes[keep].shape] * 2, twin
                assert _colour_words(twin) == [first.colour, second.colour], twin
                kept += keep
    assert pairs > 40 and 0 < kept < pairs, (pairs, kept)


def test_a_pool_with_twins_is_the_same_pool_plus_their_tokens(tiny_run):
    kw = dict(tokenizer_dir=tiny_run.out / "tokenizer", size=32, seed=5, workers=1, captions_per_language=2,
              mix=SceneMix(kinds={"single": 1, "count": 1, "pair": 2}))
    plain, contrast = render_pool(40, **kw), render_pool(40, **kw, twins=("exchange",))
    assert plain.contrast_input_ids is None
    assert np.array_equal(plain.images, contrast.images) and np.array_equal(plain.input_ids, contrast.input_ids)
    differs = (contrast.contrast_input_ids != contrast.input_ids).any(axis=-1)  # N × languages × captions
    # half the scenes are pairs; nearly every caption of a pair tells its objects apart (by shape or by place)
    assert 10 < differs.any(axis=(1, 2)).sum() < 30 and differs[differs.any(axis=(1, 2))].mean() > 0.8
    # kinds in turn over a scene's captions: the first caption's twin is the first kind's, the second's the other's
    mixed = render_pool(40, **kw, twins=("one-shape", "exchange"))
    assert np.array_equal(mixed.input_ids, plain.input_ids)
    assert np.array_equal(mixed.contrast_input_ids[:, :, 1], contrast.contrast_input_ids[:, :, 1])
    assert not np.array_equal(mixed.contrast_input_ids[:, :, 0], contrast.contrast_input_ids[:, :, 0])
    with pytest.raises(ValueError, match="twins must be some of"):
        render_pool(4, **kw, twins=("swap",))


def _trainer(margin: float, weight: float):
    from kolors.recipe.architecture import ARCHITECTURES, build_text_encoder, build_unet
    from kolors.recipe.trainer import DiffusionTrainer

    arch = ARCHITECTURES["tiny"]
    te = build_text_encoder(arch["text_encoder"], 128, seed=1)
    unet = build_unet(arch["unet"], text_hidden_size=arch["text_encoder"].hidden_size, image_size=32, seed=2)
    return DiffusionTrainer(unet, te, image_size=32, device=torch.device("cpu"), ema_decay=None,
                            binding_contrast=weight, binding_margin=margin)


def test_the_hinge_is_the_margin_when_the_twin_is_the_caption_and_falls_as_the_gap_grows():
    torch.manual_seed(0)
    trainer = _trainer(margin=0.3, weight=2.0)
    b = 4
    latents = torch.randn(b, trainer.unet.config.in_channels, 4, 4)
    ids = torch.randint(5, 100, (b, 12))
    mask, pos = torch.ones_like(ids), torch.arange(12).expand(b, 12)
    noise, ts = torch.randn_like(latents), torch.tensor([100, 300, 600, 900])
    common = dict(noise=noise, timesteps=ts)
    plain = trainer.loss(latents, ids, mask, pos, **common)
    rows = torch.tensor([1, 3])
    itself = {"rows": rows, "input_ids": ids[rows], "attention_mask": mask[rows], "position_ids": pos[rows]}
    with_itself = trainer.loss(latents, ids, mask, pos, **common, contrast=itself)
    assert float(trainer.last_contrast) == pytest.approx(0.3, abs=1e-6)
    assert float(with_itself) == pytest.approx(float(plain) + 2.0 * 0.3, rel=1e-5)
    other = {**itself, "input_ids": torch.randint(5, 100, (2, 12))}
    trainer.loss(latents, ids, mask, pos, **common, contrast=other)
    assert float(trainer.last_contrast) != pytest.approx(0.3)
    none = {**itself, "rows": rows[:0], "input_ids": ids[:0], "attention_mask": mask[:0], "position_ids": pos[:0]}
    assert float(trainer.loss(latents, ids, mask, pos, **common, contrast=none)) == pytest.approx(float(plain))


def test_a_run_with_binding_contrast_logs_its_hinge_and_its_pool_is_kept_apart(tiny_run, tmp_path):
    from kolors.errors import KolorsError
    from kolors.recipe.options import config_from_args

    out = tmp_path / "m"
    result = run(_short_run(tiny_run, out, steps_diffusion=3, scene_mix="pair=1", binding_contrast=1.0,
                            binding_margin=0.5))
    hinges = [h["binding_hinge"] for h in result.history if "binding_hinge" in h]
    assert hinges and all(0 <= h <= 0.5 + 1e-6 for h in hinges)
    cache = torch.load(tmp_path / "m.work" / "latents.pt", weights_only=False)
    assert cache["contrast_input_ids"].shape == cache["input_ids"].shape
    with pytest.raises(KolorsError, match="made with --binding-contrast --binding-twin exchange; this run asks for "
                                          "no --binding-contrast"):
        run(_short_run(tiny_run, out, steps_diffusion=4, resume=True, scene_mix="pair=1"))
    with pytest.raises(KolorsError, match="this run asks for --binding-contrast --binding-twin one-shape: resume"):
        run(_short_run(tiny_run, out, steps_diffusion=4, resume=True, scene_mix="pair=1", binding_contrast=1.0,
                       binding_twin=("one-shape",)))
    options = tmp_path / "m.work" / "pool.json"
    recorded = json.loads(options.read_text())
    options.write_text(json.dumps({**recorded, "contrast_captions": True}))  # written before --binding-twin
    with pytest.raises(KolorsError, match="made with --binding-contrast --binding-twin exchange; this run asks for "
                                          "--binding-contrast --binding-twin one-shape"):
        run(_short_run(tiny_run, out, steps_diffusion=4, resume=True, scene_mix="pair=1", binding_contrast=1.0,
                       binding_twin=("one-shape",)))
    for key in ("contrast_input_ids", "contrast_attention_mask", "contrast_position_ids"):
        del cache[key]  # a pool made without the twins
    torch.save(cache, tmp_path / "m.work" / "latents.pt")
    (tmp_path / "m.work" / "pool.json").unlink()
    with pytest.raises(KolorsError, match="--binding-contrast needs the twin captions of the pool"):
        run(_short_run(tiny_run, out, steps_diffusion=4, resume=True, scene_mix="pair=1", binding_contrast=1.0))
    for bad in (["--binding-contrast", "-1"], ["--binding-margin", "0"], ["--binding-contrast", "nan"],
                ["--binding-twin", "one-shape"], ["--binding-contrast", "1", "--binding-twin", "swap"]):
        with pytest.raises(SystemExit):
            config_from_args(["--out", "x", *bad])
