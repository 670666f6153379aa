"""--attention-grounding: which caption words name which object, each object's cells, and the loss on the UNet's
cross-attention maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_recipe import _short_run

from kolors.data.captions import EN_WORDS, ZH_WORDS, caption
from kolors.data.object_words import object_spans
from kolors.data.shapes import Scene, SceneMix, Shape, sample_scene
from kolors.recipe.grounding import CrossAttentionMaps, caption_token_objects, grounding_loss, noise_weights
from kolors.recipe.pool import object_masks, render_pool
from kolors.recipe.run import run

WORDS = {"en": EN_WORDS, "zh": ZH_WORDS}
PLURAL = {"circles": "circle", "disks": "circle", "squares": "square", "triangles": "triangle"}


def _names(span_text: str, lang: str) -> set[tuple[str, str]]:
    """The (attribute, value) pairs a word can mean."""
    words = WORDS[lang]
    out = {(a, v) for a in ("colour", "shape") for v, ws in words[a].items() if span_text in ws}
    if span_text in PLURAL:
        out.add(("shape", PLURAL[span_text]))
    return out


def test_each_colour_and_shape_word_of_a_pair_caption_names_its_own_object():
    rng = np.random.default_rng(3)
    for i in range(600):
        scene = sample_scene(rng, "train" if i % 2 else "heldout", kind=("single", "count", "pair")[i % 3])
        for lang in ("en", "zh"):
            text = caption(scene, lang, rng)
            spans = object_spans(scene, text, lang)
            every = (1 << len(scene.shapes)) - 1
            for start, end, bits in spans:
                meanings = _names(text[start:end], lang)
                assert meanings, (text, text[start:end])
                named = [k for k in range(len(scene.shapes)) if bits >> k & 1]
                for k in named:  # the word is the object's colour or shape
                    s = scene.shapes[k]
                    assert meanings & {("colour", s.colour), ("shape", s.shape)}, (text, text[start:end], s)
            found = {bits for _, _, bits in spans}
            if scene.kind == "pair":
                assert found == {1, 2}, (text, spans)  # each object named on its own, never both at once
            else:
                assert found == {every}, (text, spans)


def test_a_background_colour_names_nothing_and_pink_is_not_red():
    red_on_white = Scene(shapes=(Shape("circle", "red", "large", "left"), Shape("square", "pink", "small", "right")),
                         background="white", kind="pair", relation="left")
    text = "白色背景，一个粉红色的正方形在一个红色圆形的右边"
    spans = [(text[s:e], bits) for s, e, bits in object_spans(red_on_white, text, "zh")]
    assert spans == [("粉红色", 2), ("正方形", 2), ("红色", 1), ("圆形", 1)]
    single = Scene(shapes=(Shape("triangle", "yellow", "large", "center"),), background="black")
    text = "黑色背景上有一个大三角形"
    assert [(text[s:e], b) for s, e, b in object_spans(single, text, "zh")] == [("三角形", 1)]


def test_token_objects_mark_the_pieces_of_each_objects_words(tiny_run):
    from kolors.recipe.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tiny_run.out / "tokenizer")
    scene = Scene(shapes=(Shape("circle", "red", "large", "left"), Shape("square", "blue", "small", "right")),
                  background="white", kind="pair", relation="left")
    text = "a red circle to the left of a blue square"
    objects = caption_token_objects(tokenizer, scene, text, "en", 64)
    ids = tokenizer([text], padding="max_length", max_length=64)["input_ids"][0]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    marked = {}
    for piece, bits in zip(pieces, objects):
        if bits:
            marked.setdefault(int(bits), []).append(piece)
    assert "".join(marked[1]).replace("\u2581", " ").split() == ["red", "circle"]
    assert "".join(marked[2]).replace("\u2581", " ").split() == ["blue", "square"]
    assert set(objects) == {0, 1, 2}
    assert not caption_token_objects(tokenizer, scene, text, "en", 4).any()  # does not fit: nothing grounded
    # SentencePiece reads "，" as ","; the words after it are still found (a quarter of Chinese captions have one)
    zh = caption_token_objects(tokenizer, scene, "白色背景，一个红色圆形在蓝色正方形的左边", "zh", 64)
    assert sorted(np.unique(zh)) == [0, 1, 2] and (zh == 1).sum() == 4 and (zh == 2).sum() == 5


def test_object_masks_are_each_object_alone():
    scene = Scene(shapes=(Shape("circle", "red", "large", "left"), Shape("square", "blue", "large", "right")),
                  background="white", kind="pair", relation="left")
    masks = object_masks(scene, 64, 8)
    assert masks.shape == (3, 8, 8) and not masks[2].any()
    cols = [np.nonzero(m.any(axis=0))[0] for m in masks[:2]]
    assert cols[0].max() < 4 <= cols[1].min()  # left object on the left half, right on the right
    assert not (masks[0] & masks[1]).any()


def _tiny_unet():
    from kolors.recipe.architecture import ARCHITECTURES, build_unet

    arch = ARCHITECTURES["tiny"]
    return build_unet(arch["unet"], text_hidden_size=arch["text_encoder"].hidden_size, image_size=32, seed=2)


def test_recorded_maps_are_the_layers_attention_and_the_processors_come_back():
    torch.manual_seed(0)
    unet = _tiny_unet()
    x, t = torch.randn(3, 4, 4, 4), torch.tensor([10, 500, 900])
    text = torch.randn(3, 12, 32)
    ids = torch.zeros(3, 6)
    kwargs = {"encoder_hidden_states": text, "added_cond_kwargs": {"text_embeds": torch.randn(3, 32), "time_ids": ids}}
    before = {n: type(m.processor) for n, m in unet.named_modules() if n.endswith("attn2")}
    plain = unet(x, t, **kwargs).sample
    maps = CrossAttentionMaps()
    with maps.recording(unet, torch.tensor([0, 2])):
        recorded = unet(x, t, **kwargs).sample
    assert torch.equal(plain, recorded)  # recording changes nothing the UNet computes
    assert {n: type(m.processor) for n, m in unet.named_modules() if n.endswith("attn2")} == before
    assert len(maps.maps) == len(before)
    for a in maps.maps:
        assert a.shape[0] == 2 and a.shape[2] == 12 and int(a.shape[1] ** 0.5) ** 2 == a.shape[1]
        assert torch.allclose(a.sum(-1), torch.ones(a.shape[:2]))  # a distribution over the tokens


def test_the_loss_is_zero_inside_the_object_one_outside_and_ignores_unnamed_tokens():
    masks = torch.zeros(1, 3, 4, 4)
    masks[0, 0, :, :2] = 1  # object 0: the left half
    objects = torch.zeros(1, 5, dtype=torch.uint8)
    objects[0, 1] = 1
    inside = torch.zeros(1, 16, 5)
    inside[0, :, 0] = 1  # every cell looks at token 0
    inside.view(1, 4, 4, 5)[0, :, :2, 1] = 1  # token 1 is looked at only on the left half
    inside.view(1, 4, 4, 5)[0, :, :2, 0] = 0
    assert float(grounding_loss([inside], objects, masks)) == pytest.approx(0.0)
    outside = torch.zeros(1, 16, 5)  # token 1 (the named one) looked at only on the right half
    outside.view(1, 4, 4, 5)[0, :, 2:, 1] = 1
    outside.view(1, 4, 4, 5)[0, :, :2, 0] = 1
    assert float(grounding_loss([outside], objects, masks)) == pytest.approx(1.0)
    half = (inside + outside) / 2
    assert float(grounding_loss([half, inside], objects, masks)) == pytest.approx(0.125)  # (0.5² + 0) / 2


def test_row_weights_move_the_mean_between_rows_and_keep_its_scale():
    masks = torch.zeros(2, 3, 4, 4)
    masks[:, 0, :, :2] = 1  # object 0 of both rows: the left half
    objects = torch.zeros(2, 3, dtype=torch.uint8)
    objects[:, 1] = 1
    maps = torch.zeros(2, 16, 3)
    maps.view(2, 4, 4, 3)[0, :, :2, 1] = 1  # row 0 reads its object word on the object: loss 0
    maps.view(2, 4, 4, 3)[1, :, 2:, 1] = 1  # row 1 reads it beside the object: loss 1
    maps[..., 0] = 1
    assert float(grounding_loss([maps], objects, masks)) == pytest.approx(0.5)
    assert float(grounding_loss([maps], objects, masks, torch.ones(2))) == pytest.approx(0.5)
    assert float(grounding_loss([maps], objects, masks, torch.tensor([3.0, 1.0]))) == pytest.approx(0.25)
    assert float(grounding_loss([maps], objects, masks, torch.tensor([0.0, 5.0]))) == pytest.approx(1.0)
    t = torch.tensor([300, 900])
    assert noise_weights(t, 0).tolist() == [1.0, 1.0]
    assert noise_weights(t, 2).tolist() == pytest.approx([1 / 9, 1.0])  # (300 / 900)², the ratio of (t / T)²
    assert noise_weights(t, 1e6).tolist() == [0.0, 1.0]  # a large power leaves the noisiest row, not nothing


def test_a_run_with_attention_grounding_logs_it_and_its_pool_is_kept_apart(tiny_run, tmp_path, capsys):
    from kolors.errors import KolorsError
    from kolors.recipe.options import config_from_args

    kw = {"tokenizer_dir": tiny_run.out / "tokenizer", "size": 32, "seed": 5, "workers": 1, "captions_per_language": 2,
          "mix": SceneMix(kinds={"single": 1, "count": 1, "pair": 2})}
    plain, grounded = render_pool(24, **kw), render_pool(24, **kw, grounding_factor=8)
    assert plain.token_objects is None and np.array_equal(plain.input_ids, grounded.input_ids)
    assert grounded.token_objects.shape == grounded.input_ids.shape and grounded.object_masks.shape == (24, 3, 4, 4)
    assert (grounded.token_objects.reshape(24, -1) != 0).any(axis=1).all()  # every caption names its objects
    out = tmp_path / "m"
    result = run(_short_run(tiny_run, out, steps_diffusion=3, scene_mix="pair=1", attention_grounding=1.0,
                            grounding_noise_power=2.0))
    values = [h["attention_grounding"] for h in result.history if "attention_grounding" in h]
    assert values and all(0 <= v <= 1 for v in values)
    with pytest.raises(KolorsError, match="made with --attention-grounding; this run asks for no "
                                          "--attention-grounding"):
        run(_short_run(tiny_run, out, steps_diffusion=4, resume=True, scene_mix="pair=1"))
    plain_out = tmp_path / "p"
    run(_short_run(tiny_run, plain_out, steps_diffusion=2, scene_mix="pair=1"))
    with pytest.raises(KolorsError, match="made with no --attention-grounding; this run asks for "
                                          "--attention-grounding: resume"):
        run(_short_run(tiny_run, plain_out, steps_diffusion=4, resume=True, scene_mix="pair=1",
                       attention_grounding=1.0))
    (tmp_path / "p.work" / "pool.json").unlink()  # a pool from before pool.json: its latents tell
    with pytest.raises(KolorsError, match="--attention-grounding needs the token objects and object masks"):
        run(_short_run(tiny_run, plain_out, steps_diffusion=4, resume=True, scene_mix="pair=1",
                       attention_grounding=1.0))
    for bad in (["--attention-grounding", "-1"], ["--attention-grounding", "nan"], ["--grounding-noise-power", "2"],
                ["--attention-grounding", "0.2", "--grounding-noise-power", "-1"]):
        with pytest.raises(SystemExit):
            config_from_args(["--out", "x", *bad])
    assert ("--grounding-noise-power 2 weighs the term --attention-grounding W adds: give that too"
            in capsys.readouterr().err)
