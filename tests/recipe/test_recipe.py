"""The built-in model's recipe end to end at toy size: every stage runs, the folder loads in diffusers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from kolors.recipe.architecture import KOLORS_SCHEDULER_CONFIG
from kolors.recipe.run import run
from kolors.recipe.options import RecipeConfig
from kolors.recipe.trainer import encode_text, sample_timesteps, tokenize


def test_folder_has_the_kolors_layout(tiny_run):
    out = tiny_run.out
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "KolorsPipeline"
    assert index["force_zeros_for_empty_prompt"] is False
    assert index["text_encoder"] == ["kolors", "ChatGLMModel"]
    assert index["tokenizer"] == ["kolors", "ChatGLMTokenizer"]
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    scheduler = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    for key in ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type",
                "timestep_spacing", "steps_offset"):
        assert scheduler[key] == KOLORS_SCHEDULER_CONFIG[key]
    assert scheduler["_class_name"] == "EulerDiscreteScheduler"
    for name in ("unet", "vae"):
        assert (out / name / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert (out / "tokenizer" / "tokenizer.model").is_file()
    defaults = json.loads((out / "kolors_defaults.json").read_text())
    assert set(defaults) == {"width", "height", "steps", "guidance"}
    assert defaults["width"] == defaults["height"] == 64
    readme = (out / "README.md").read_text()
    assert "Apache-2.0" in readme and "64×64" in readme
    unet_config = json.loads((out / "unet" / "config.json").read_text())
    assert unet_config["encoder_hid_dim_type"] == "text_proj"
    assert unet_config["addition_embed_type"] == "text_time"
    vae_config = json.loads((out / "vae" / "config.json").read_text())
    assert vae_config["scaling_factor"] != 1.0 and vae_config["latent_channels"] == 4


def test_diffusion_loss_decreases(tiny_run):
    history = tiny_run.history
    assert len(history) >= 2
    assert history[-1]["fixed_loss"] < 0.9 * history[0]["fixed_loss"]


def test_diffusers_loads_and_generates(tiny_run):
    from diffusers import KolorsPipeline

    pipe = KolorsPipeline.from_pretrained(str(tiny_run.out), variant="fp16", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", num_inference_steps=2, guidance_scale=3.0, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 64, 64, 3)
    assert torch.isfinite(torch.from_numpy(image)).all()

    # The training-side conditioning is exactly the pipeline's, for a prompt and the empty negative prompt.
    prompts = ["a red circle", "一个蓝色的正方形"]
    emb, neg, pooled, neg_pooled = pipe.encode_prompt(prompts, device=torch.device("cpu"), num_images_per_prompt=1,
                                                      do_classifier_free_guidance=True)
    with torch.no_grad():
        ids = tokenize(pipe.tokenizer, prompts + ["", ""])
        tokens, pool = encode_text(pipe.text_encoder, ids["input_ids"], ids["attention_mask"], ids["position_ids"])
    torch.testing.assert_close(tokens[:2], emb)
    torch.testing.assert_close(pool[:2], pooled)
    torch.testing.assert_close(tokens[2:], neg)
    torch.testing.assert_close(pool[2:], neg_pooled)


def test_tokenizer_settings(tiny_run):
    import sentencepiece as spm
    from diffusers.pipelines.kolors import ChatGLMTokenizer

    tok = ChatGLMTokenizer.from_pretrained(str(tiny_run.out / "tokenizer"))
    sp = spm.SentencePieceProcessor(model_file=str(tiny_run.out / "tokenizer" / "tokenizer.model"))
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, -1)
    assert sp.vocab_size() <= 400
    # Unseen characters fall back to bytes instead of <unk>.
    ids = tok("一只🦄", add_special_tokens=False)["input_ids"]
    assert 0 not in ids
    te_config = json.loads((tiny_run.out / "text_encoder" / "config.json").read_text())
    assert te_config["padded_vocab_size"] >= len(tok.get_vocab())
    assert te_config["seq_length"] >= 256 and te_config["original_rope"] is True
    # Han characters are pieces of their own, in the vocabulary and in what a prompt encodes to.
    pieces = tok.convert_ids_to_tokens(tok("一个蓝色的圆形 a blue circle", add_special_tokens=False)["input_ids"])
    han = [p.lstrip("▁") for p in pieces if any("\u4e00" <= ch <= "\u9fff" for ch in p)]
    assert han == list("一个蓝色的圆形")
    vocab_han = [t.lstrip("▁") for t in tok.get_vocab() if any("\u4e00" <= ch <= "\u9fff" for ch in t)]
    assert vocab_han and all(len(t) == 1 for t in vocab_han)


def test_init_from_carries_weights_across_tokenizers(tiny_run, tmp_path):
    from diffusers import UNet2DConditionModel

    from kolors.models.chatglm import ChatGLMModel
    from kolors.recipe.architecture import ARCHITECTURES, build_text_encoder, build_unet
    from kolors.recipe.initialise import initialise_from
    from kolors.recipe.pool import caption_corpus
    from kolors.recipe.tokenizer import load_tokenizer, padded_vocab_size, train_tokenizer

    # A tokenizer of another corpus and size: ids of the same token differ between the two.
    new_tok = train_tokenizer(caption_corpus(200, seed=7), tmp_path / "tok", vocab_size=450)
    arch = ARCHITECTURES["tiny"]
    te = build_text_encoder(arch["text_encoder"], padded_vocab_size(new_tok), seed=5)
    unet = build_unet(arch["unet"], text_hidden_size=arch["text_encoder"].hidden_size, image_size=64, seed=5)
    fresh_rows = te.embedding.word_embeddings.weight.detach().clone()
    carried = initialise_from(tiny_run.out, new_tok, te, unet)

    old_unet = UNet2DConditionModel.from_pretrained(str(tiny_run.out / "unet"), variant="fp16")
    for (name, p), q in zip(unet.state_dict().items(), old_unet.state_dict().values()):
        assert torch.equal(p, q.float()), name
    old_te = ChatGLMModel.from_pretrained(str(tiny_run.out / "text_encoder"), variant="fp16")
    old_vocab = load_tokenizer(tiny_run.out / "tokenizer").get_vocab()
    new_vocab = new_tok.get_vocab()
    shared = [t for t in new_vocab if t in old_vocab]
    assert 0 < carried["rows_carried"] == len(shared) < carried["rows"] == len(new_vocab)
    new_rows, old_rows = te.embedding.word_embeddings.weight, old_te.embedding.word_embeddings.weight
    for token in ("▁circle", "蓝", "[gMASK]"):
        assert torch.equal(new_rows[new_vocab[token]], old_rows[old_vocab[token]].float())
    only_new = next(t for t in new_vocab if t not in old_vocab)
    assert torch.equal(new_rows[new_vocab[only_new]], fresh_rows[new_vocab[only_new]])
    layer = "encoder.layers.0.self_attention.query_key_value.weight"
    assert torch.equal(te.state_dict()[layer], old_te.state_dict()[layer].float())


def test_a_deeper_unet_grown_from_a_saved_one_starts_from_its_exact_outputs(tiny_run):
    """--transformer-layers 2 with --init-from a model of 1: the added blocks are identities until trained."""
    from dataclasses import replace

    from diffusers import UNet2DConditionModel

    from kolors.errors import KolorsError
    from kolors.recipe.architecture import ARCHITECTURES, build_unet
    from kolors.recipe.initialise import load_grown

    arch = ARCHITECTURES["tiny"]
    old = UNet2DConditionModel.from_pretrained(str(tiny_run.out / "unet"), variant="fp16").float()
    state = old.state_dict()
    deep = build_unet(replace(arch["unet"], transformer_layers_per_block=(2, 2, 2)),
                      text_hidden_size=arch["text_encoder"].hidden_size, image_size=64, seed=5)
    added = load_grown(deep, state)
    # every attention block of the UNet (two down, the mid, two up) got one more
    assert len(added) == sum(1 for n, _ in old.named_modules() if n.endswith("transformer_blocks.0")) > 4
    assert all(n.endswith("transformer_blocks.1") for n in added)
    g = torch.Generator().manual_seed(0)
    x, words = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 7, arch["text_encoder"].hidden_size, generator=g)
    added_cond = {"text_embeds": torch.randn(2, arch["text_encoder"].hidden_size, generator=g),
                  "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)}
    with torch.no_grad():
        before = old(x, 500, encoder_hidden_states=words, added_cond_kwargs=added_cond).sample
        after = deep(x, 500, encoder_hidden_states=words, added_cond_kwargs=added_cond).sample
    assert torch.equal(before, after)
    # the added blocks are not inert: their zeroed outputs get gradients, so training moves them
    deep(x, 500, encoder_hidden_states=words, added_cond_kwargs=added_cond).sample.square().mean().backward()
    assert deep.get_submodule(added[0]).attn1.to_out[0].weight.grad.abs().sum() > 0
    # a shallower UNet, or another width, cannot take the saved weights: one line that says what to give
    shallow_state = build_unet(arch["unet"], text_hidden_size=arch["text_encoder"].hidden_size, image_size=64).state_dict()
    with pytest.raises(KolorsError, match="does not fit this architecture: .* have no place here .*--architecture "
                                          "it was trained with and --transformer-layers 2 or more"):
        load_grown(build_unet(arch["unet"], text_hidden_size=arch["text_encoder"].hidden_size, image_size=64),
                   deep.state_dict())
    wide = build_unet(replace(arch["unet"], block_out_channels=(16, 16, 48)),
                      text_hidden_size=arch["text_encoder"].hidden_size, image_size=64)
    with pytest.raises(KolorsError, match="has another shape"):
        load_grown(wide, shallow_state)


def test_a_grown_run_exports_the_deeper_unet_and_resumes_only_as_itself(tiny_run, tmp_path):
    from kolors.errors import KolorsError

    out = tmp_path / "deep"
    run(_short_run(tiny_run, out, steps_diffusion=3, transformer_layers=2))
    config = json.loads((out / "unet" / "config.json").read_text())
    assert config["transformer_layers_per_block"] == [2, 2, 2]
    with pytest.raises(KolorsError, match="holds another architecture than this command builds: resume with the "
                                          "--architecture and --transformer-layers the run began with"):
        run(_short_run(tiny_run, out, steps_diffusion=4, resume=True))


def test_an_init_from_that_is_not_a_fitting_model_is_one_line_before_the_run_starts(tiny_run, tmp_path):
    """A wrong --init-from is found from its configs before the tokenizer, the pool or the VAE: nothing is written."""
    import shutil

    from kolors.errors import KolorsError

    def edited(name: str, part: str, **changes) -> Path:
        folder = tmp_path / name
        shutil.copytree(tiny_run.out, folder)
        config = folder / part / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), **changes}))
        return folder

    (tmp_path / "notes").mkdir()
    cases = [(tmp_path / "absent", "--init-from .*absent does not exist: give the --out folder of a recipe run"),
             (tiny_run.out / "model_index.json", "model_index.json is not a folder"),
             (tmp_path / "notes", ("notes is not a model folder the recipe exported \\(no model_index.json, "
                                   "tokenizer/, text_encoder/, unet/, vae/\\)")),
             (edited("deep", "unet", transformer_layers_per_block=[3, 3, 3]),
              ("the --init-from UNet has 3 transformer blocks in each attention block, this command builds 1: "
               "give --transformer-layers 3 or more")),
             (edited("wide", "unet", block_out_channels=[16, 16, 48]),
              ("another architecture than this command builds \\(unet block_out_channels \\[16, 16, 48\\], here "
               "\\(16, 16, 32\\)\\): give the --architecture it was trained with")),
             (edited("te", "text_encoder", hidden_size=64), "text_encoder hidden_size 64, here 32")]
    for init_from, message in cases:
        out = tmp_path / f"out-{init_from.name}"
        with pytest.raises(KolorsError, match=message):
            run(_short_run(tiny_run, out, init_from=init_from))
        assert not out.exists() and not Path(f"{out}.work").exists()
    # a shallower model than the command builds fits (its added blocks start as identities)
    from kolors.recipe.architecture import ARCHITECTURES
    from kolors.recipe.initialise import check_fits
    from kolors.recipe.options import architecture

    check_fits(tmp_path / "deep", architecture(_short_run(tiny_run, tmp_path / "o", transformer_layers=3)))
    check_fits(tiny_run.out, ARCHITECTURES["tiny"])


def test_timestep_shift_draws_the_noisier_half_more_often():
    g = torch.Generator().manual_seed(0)
    uniform = sample_timesteps(20000, 1100, generator=g)
    shifted = sample_timesteps(20000, 1100, shift=3.0, generator=g)
    for t in (uniform, shifted):
        assert t.dtype == torch.int64 and int(t.min()) >= 0 and int(t.max()) <= 1099
    assert abs(float((uniform >= 550).float().mean()) - 0.5) < 0.02
    # shift 3 maps u to 3u / (1 + 2u): u = 1/4 lands at T/2, so three quarters of the draws are in the noisier half
    assert abs(float((shifted >= 550).float().mean()) - 0.75) < 0.02


def test_average_matches_embedding_rows_by_token_and_averages_the_rest(tiny_run, tmp_path, monkeypatch):
    import shutil
    import types

    from safetensors.torch import load_file, save_file

    import kolors.recipe.tokenizer as tokenizer_module
    from kolors import KolorsError
    from kolors.recipe.average import average_models, row_order

    assert row_order({"a": 2, "b": 3}, {"a": 3, "b": 2}, 5).tolist() == [0, 1, 3, 2, 4]
    with pytest.raises(KolorsError, match="token 'b' is missing"):
        row_order({"a": 2, "b": 3}, {"a": 3}, 5)

    def weights(folder, part):
        return load_file(next((folder / part).glob("*.safetensors")))

    # B: the tiny model with every UNet weight tripled, and a tokenizer that numbers "▁circle" and "蓝" the other way
    # round, its embedding rows swapped to match (and scaled by 5).
    b = tmp_path / "b"
    shutil.copytree(tiny_run.out, b)
    save_file({k: v * 3 for k, v in weights(b, "unet").items()}, next((b / "unet").glob("*.safetensors")))
    te = weights(b, "text_encoder")
    vocab = tokenizer_module.load_tokenizer(b / "tokenizer").get_vocab()
    red, blue = vocab["▁circle"], vocab["蓝"]
    rows = te["embedding.word_embeddings.weight"]
    rows[[red, blue]] = rows[[blue, red]] * 5
    save_file(te, next((b / "text_encoder").glob("*.safetensors")))
    renumbered = types.SimpleNamespace(get_vocab=lambda: {**vocab, "▁circle": blue, "蓝": red})
    real = tokenizer_module.load_tokenizer
    monkeypatch.setattr(tokenizer_module, "load_tokenizer",
                        lambda folder: renumbered if Path(folder).parent == b else real(folder))

    out = average_models([tiny_run.out, b], tmp_path / "soup", weights=[1, 1])
    a_unet, got_unet = weights(tiny_run.out, "unet"), weights(out, "unet")
    for name, value in a_unet.items():
        assert torch.allclose(got_unet[name].float(), 2 * value.float(), rtol=1e-3, atol=1e-3), name
    a_rows = weights(tiny_run.out, "text_encoder")["embedding.word_embeddings.weight"].float()
    got_rows = weights(out, "text_encoder")["embedding.word_embeddings.weight"].float()
    for k in (red, blue, vocab["紫"]):  # the token's own row: (1 + 5) / 2 = 3 times it for the swapped two
        assert torch.allclose(got_rows[k], (3 if k in (red, blue) else 1) * a_rows[k], rtol=1e-3, atol=1e-3)
    assert {p.name for p in out.iterdir()} == {p.name for p in tiny_run.out.iterdir()}
    with pytest.raises(KolorsError, match="at least two"):
        average_models([tiny_run.out], tmp_path / "x")
    with pytest.raises(KolorsError, match="--weights needs 2 numbers"):
        average_models([tiny_run.out, b], tmp_path / "x", weights=[1])
    # --out replaces only a model folder that is not one of the inputs: never someone's files, never an input
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"someone's photo")
    with pytest.raises(KolorsError, match="is not a model this recipe exported"):
        average_models([tiny_run.out, b], mine)
    with pytest.raises(KolorsError, match="would replace the model it reads"):
        average_models([tiny_run.out, b], b)
    assert (mine / "holiday.jpg").read_bytes() == b"someone's photo" and (b / "unet").is_dir()
    assert average_models([tiny_run.out, b], out) == out and (out / "model_index.json").is_file()  # a soup again


def test_stated_position_makes_captions_say_where_the_objects_are():
    import numpy as np

    from kolors.data.captions import EN_WORDS, ZH_WORDS, caption
    from kolors.data.shapes import sample_scene
    from kolors.recipe.options import config_from_args
    from kolors.recipe.pool import placed_caption

    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng, "train", kind=k) for k in ("single", "pair") for _ in range(150)]
    scenes = [s for s in scenes if s.kind == "single" or s.relation is not None]
    places = {lang: [p for group in words["position"].values() for p in group]
              + [r for group in words["relation"].values() for r in group]
              for lang, words in (("en", EN_WORDS), ("zh", ZH_WORDS))}

    def share(lang, stated):
        r = np.random.default_rng(1)
        captions = [placed_caption(s, lang, r, stated) for s in scenes]
        return np.mean([any(p in text for p in places[lang]) for text in captions])

    for lang in ("en", "zh"):
        assert share(lang, 1.0) == 1.0
        assert 0.3 < share(lang, 0.0) < 0.9  # the templates' natural mix leaves place unstated in some captions
    # 0 is the pool as it was: the same captions from the same draws
    a, b = np.random.default_rng(2), np.random.default_rng(2)
    assert [placed_caption(s, "zh", a, 0.0) for s in scenes] == [caption(s, "zh", b) for s in scenes]
    assert config_from_args(["--out", "x", "--stated-position", "0.85"]).stated_position == 0.85
    with pytest.raises(SystemExit):
        config_from_args(["--out", "x", "--stated-position", "1.5"])


def test_layout_share_replaces_scenes_with_one_shape_on_one_background_that_says_where(tiny_run):
    import numpy as np

    from kolors.data.captions import EN_WORDS, ZH_WORDS
    from kolors.data.shapes import BACKGROUND_RGB
    from kolors.recipe.options import config_from_args
    from kolors.recipe.pool import render_pool
    from kolors.recipe.tokenizer import load_tokenizer

    folder = tiny_run.out / "tokenizer"
    tokenizer = load_tokenizer(folder)
    kw = dict(tokenizer_dir=folder, size=32, seed=5, workers=1, captions_per_language=2, stated_position=0.5)
    plain, none, mixed = render_pool(80, **kw), render_pool(80, **kw, layout_share=0.0), \
        render_pool(80, **kw, layout_share=0.5)
    assert np.array_equal(plain.images, none.images) and np.array_equal(plain.input_ids, none.input_ids)
    replaced = ~(plain.images == mixed.images).all(axis=(1, 2, 3))
    assert 0.3 < replaced.mean() < 0.7
    corners = mixed.images[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners[replaced] == 255).all()  # white background
    places = {lang: [p for group in words["position"].values() for p in group]
              for lang, words in (("en", EN_WORDS), ("zh", ZH_WORDS))}
    for i in np.flatnonzero(replaced):
        for li, lang in enumerate(("en", "zh")):
            for k in range(2):
                ids = mixed.input_ids[i, li, k][mixed.attention_mask[i, li, k] == 1].tolist()
                text = tokenizer.decode(ids)
                assert any(p in text for p in places[lang]), text
    assert config_from_args(["--out", "x", "--layout-share", "0.3"]).layout_share == 0.3
    for bad in ("1.5", "-0.1", "nan"):
        with pytest.raises(SystemExit):
            config_from_args(["--out", "x", "--layout-share", bad])
    # --layout-background: the same scenes replaced, now on black, shapes redrawn to colours that show on it
    dark = render_pool(80, **kw, layout_share=0.5, layout_backgrounds=["black"])
    assert np.array_equal(~(plain.images == dark.images).all(axis=(1, 2, 3)), replaced)
    dark_corners = dark.images[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (dark_corners[replaced] == BACKGROUND_RGB["black"]).all()
    # several: each layout scene on one of them; a repeated one weighs more
    many = render_pool(200, **kw, layout_share=0.5, layout_backgrounds=["black", "black", "white"])
    swapped = ~(render_pool(200, **kw).images == many.images).all(axis=(1, 2, 3))
    first = many.images[swapped][:, 0, 0]
    black = (first == BACKGROUND_RGB["black"]).all(axis=1)
    white = (first == BACKGROUND_RGB["white"]).all(axis=1)
    assert (black | white).all() and 0.5 < black.mean() < 0.85, black.mean()
    assert config_from_args(["--out", "x", "--layout-background", "black"]).layout_background == ("black",)
    assert config_from_args(["--out", "x", "--layout-background", "black", "white"]).layout_background == \
        ("black", "white")
    for bad in (["purple"], ["black", "purple"], []):
        with pytest.raises(SystemExit):
            config_from_args(["--out", "x", "--layout-background", *bad])


def test_scene_mix_changes_only_which_kind_each_scene_is(tiny_run):
    """--scene-mix: the default mix given explicitly renders the very same pool; all pairs gives two shapes in every
    scene, and its captions name two colours; bad mixes are refused when the options are read."""
    import numpy as np

    from kolors.data.examples import batch
    from kolors.data.shapes import KIND_WEIGHTS, SceneMix
    from kolors.recipe.options import config_from_args, parse_scene_mix
    from kolors.recipe.pool import render_pool

    kw = dict(tokenizer_dir=tiny_run.out / "tokenizer", size=32, seed=5, workers=1, captions_per_language=1)
    plain, explicit = render_pool(60, **kw), render_pool(60, **kw, mix=SceneMix(kinds=dict(KIND_WEIGHTS)))
    assert np.array_equal(plain.images, explicit.images) and np.array_equal(plain.input_ids, explicit.input_ids)
    _, _, scenes = batch(np.random.default_rng(3), 60, mix=SceneMix(kinds=parse_scene_mix("pair=1")))
    assert {s.kind for s in scenes} == {"pair"} and all(len(s.shapes) == 2 for s in scenes)
    _, _, scenes = batch(np.random.default_rng(3), 400, mix=SceneMix(kinds=parse_scene_mix("single=1,count=3")))
    kinds = [s.kind for s in scenes]
    assert "pair" not in kinds and 0.65 < kinds.count("count") / len(kinds) < 0.85
    assert config_from_args(["--out", "x", "--scene-mix", "pair=2,single=1"]).scene_mix == "pair=2,single=1"
    for bad in ("pair=-1", "triangle=1", "pair=abc", "single=0", "pair=nan", "pair", "pair=1,pair=2"):
        with pytest.raises(SystemExit):
            config_from_args(["--out", "x", "--scene-mix", bad])


def test_count_mix_changes_only_how_many_shapes_a_count_scene_has(tiny_run):
    """--count-mix: the default weights given explicitly render the very same pool; "3=1" gives three shapes in
    every count scene and leaves the other kinds alone; bad mixes are refused when the options are read."""
    from collections import Counter

    import numpy as np

    from kolors.data.examples import batch
    from kolors.data.shapes import COUNT_WEIGHTS, SceneMix
    from kolors.recipe.options import config_from_args, parse_count_mix, parse_scene_mix
    from kolors.recipe.pool import render_pool

    kw = {"tokenizer_dir": tiny_run.out / "tokenizer", "size": 32, "seed": 5, "workers": 1, "captions_per_language": 1}
    plain, explicit = render_pool(60, **kw), render_pool(60, **kw, mix=SceneMix(counts=dict(COUNT_WEIGHTS)))
    assert np.array_equal(plain.images, explicit.images) and np.array_equal(plain.input_ids, explicit.input_ids)
    _, _, scenes = batch(np.random.default_rng(3), 200, mix=SceneMix(counts=parse_count_mix("3=1")))
    counts = Counter(len(s.shapes) for s in scenes if s.kind == "count")
    assert set(counts) == {3} and counts[3] > 20
    assert {len(s.shapes) for s in scenes if s.kind == "pair"} == {2}
    _, _, scenes = batch(np.random.default_rng(3), 600,
                         mix=SceneMix(kinds=parse_scene_mix("count=1"), counts=parse_count_mix("1=1,3=3")))
    counts = Counter(len(s.shapes) for s in scenes)
    assert 2 not in counts and 0.68 < counts[3] / len(scenes) < 0.82
    assert config_from_args(["--out", "x", "--count-mix", "3=2,1=1"]).count_mix == "3=2,1=1"
    for bad in ("3=-1", "4=1", "three=1", "1=0", "2=inf", "3", "3=1,3=2"):
        with pytest.raises(SystemExit):
            config_from_args(["--out", "x", "--count-mix", bad])


def test_pair_mix_sets_how_often_two_objects_share_their_shape():
    """--pair-mix: "same=1" gives two objects of one shape (in two colours) in every pair scene, "different=1" none,
    a mix about its share; the held-out pairs stay out of training; bad mixes are refused when read."""
    import numpy as np

    from kolors.data.examples import batch
    from kolors.data.shapes import SceneMix, is_heldout_pair
    from kolors.recipe.options import config_from_args, parse_pair_mix, parse_scene_mix

    def pairs(mix, n=300):
        _, _, scenes = batch(np.random.default_rng(4), n, size=16,
                             mix=SceneMix(kinds=parse_scene_mix("pair=1"), pairs=parse_pair_mix(mix)))
        assert {s.kind for s in scenes} == {"pair"}
        assert not any(is_heldout_pair(*((o.colour, o.shape) for o in s.shapes)) for s in scenes)
        return [s.shapes[0].shape == s.shapes[1].shape for s in scenes]

    assert all(pairs("same=1")) and not any(pairs("different=1"))
    assert 0.05 < np.mean(pairs("same=1,different=9")) < 0.16
    assert 0.22 < np.mean(pairs(None)) < 0.40  # shapes drawn independently: about 30% the same
    assert config_from_args(["--out", "x", "--pair-mix", "different=1"]).pair_mix == "different=1"
    for bad in ("same=-1", "circle=1", "same", "same=0", "different=nan", "same=1,same=2"):
        with pytest.raises(SystemExit):
            config_from_args(["--out", "x", "--pair-mix", bad])


@pytest.mark.parametrize("flag", ["--scene-mix", "--count-mix", "--pair-mix", "--language-weights", "--eval-grid"])
def test_an_empty_weights_option_is_refused_not_taken_as_the_default(flag, capsys):
    """``--count-mix "$MIX"`` with MIX unset would otherwise start a run of hours with the default mix."""
    from kolors.recipe.options import config_from_args

    for empty in ("", "  "):
        with pytest.raises(SystemExit) as e:
            config_from_args(["--out", "x", flag, empty])
        assert e.value.code == 2
        assert f"error: {flag} is empty: give its value or leave the option out" in capsys.readouterr().err


def test_foreground_masks_mark_the_latent_cells_a_shape_covers():
    import numpy as np

    from kolors.data.shapes import Scene, Shape, render_array
    from kolors.recipe.pool import latent_foreground

    scene = Scene(shapes=(Shape("square", "red", "medium", "top-left"),), background="black")
    image = render_array(scene, 128)
    mask = latent_foreground(image[None], 8)[0]
    assert mask.shape == (16, 16)
    ys, xs = np.nonzero(mask)
    # a medium square in the top-left cell: centre (0.25, 0.25) of the side, half-side 0.9 × 0.14 ≈ 16 px
    assert ys.min() >= 1 and ys.max() <= 6 and xs.min() >= 1 and xs.max() <= 6, mask.astype(int)
    assert 16 <= mask.sum() <= 36
    blank = np.full((1, 64, 64, 3), 200, dtype=np.uint8)
    assert not latent_foreground(blank, 8).any()


def test_foreground_weight_trains_on_the_pools_masks_and_needs_them(tiny_run, tmp_path):
    """A run with --foreground-weight stores the masks beside the latents and trains another model than a plain run;
    a pool made before the masks existed is refused in one line (a new --work-dir makes one)."""
    from kolors.errors import KolorsError

    run(_short_run(tiny_run, tmp_path / "plain", steps_diffusion=3))
    run(_short_run(tiny_run, tmp_path / "fg", steps_diffusion=3, foreground_weight=3.0))
    import kolors.recipe.weighting as weighting

    seen = []

    def top_left(x0, threshold):  # the tiny model's x̂₀ shows no shapes: mark a quadrant, see that it is used
        seen.append(x0.shape)
        cells = torch.zeros(x0.shape[0], *x0.shape[2:], dtype=torch.bool)
        cells[:, :4, :4] = True
        return cells

    with pytest.MonkeyPatch.context() as m:
        m.setattr(weighting, "shape_cells", top_left)
        run(_short_run(tiny_run, tmp_path / "own", steps_diffusion=3, foreground_weight=3.0,
                       foreground_from="prediction"))
    assert seen == [(4, 4, 8, 8)] * 3
    cache = torch.load(tmp_path / "fg.work" / "latents.pt", weights_only=False)
    assert cache["foreground"].shape == (32, 8, 8) and 0.02 < cache["foreground"].float().mean() < 0.6
    plain, fg, own = (torch.load(tmp_path / f"{name}.work" / "diffusion.pt", weights_only=False)["trainer"]["unet"]
                      for name in ("plain", "fg", "own"))
    assert any(not torch.equal(plain[k], fg[k]) for k in plain)
    assert any(not torch.equal(own[k], fg[k]) for k in plain) and any(not torch.equal(own[k], plain[k]) for k in plain)
    del cache["foreground"]  # a pool from before the option
    torch.save(cache, tmp_path / "fg.work" / "latents.pt")
    with pytest.raises(KolorsError, match="--foreground-weight needs the shape masks of the pool, .* give a new "
                                          "--work-dir"):
        run(_short_run(tiny_run, tmp_path / "fg", steps_diffusion=4, resume=True, foreground_weight=3.0))
    from kolors.recipe.options import config_from_args
    for bad in (["--foreground-weight", "-1"], ["--foreground-weight", "nan"], ["--foreground-from", "prediction"],
                ["--foreground-weight", "2", "--foreground-from", "model"]):
        with pytest.raises(SystemExit):
            config_from_args(["--out", "x", *bad])


def test_an_eval_grid_point_with_a_stop_writes_guidance_stop_into_the_defaults(tiny_run, tmp_path):
    """``--eval-grid 2x3x0.5``: the point is evaluated with guidance over the first half of the steps and, chosen,
    is the model's default (the built-in model ships with one); a malformed grid is refused before anything runs."""
    from kolors.recipe.options import config_from_args, parse_grid

    assert parse_grid("20x5, 25x3x0.3") == [(20, 5.0, 1.0), (25, 3.0, 0.3)]
    result = run(_short_run(tiny_run, tmp_path / "m", steps_diffusion=2, skip_eval=False, eval_grid="2x3x0.5",
                            eval_pairs=1, eval_seeds=1, eval_final_pairs=0, eval_batch=8))
    defaults = json.loads((tmp_path / "m" / "kolors_defaults.json").read_text())
    assert defaults["guidance"] == 3.0 and defaults["guidance_stop"] == 0.5 and defaults["steps"] == 2
    assert result.eval[0]["guidance_stop"] == 0.5
    assert "| defaults | 2 steps, guidance 3 over the first 50% of the steps (`kolors_defaults.json`) |" in \
        (tmp_path / "m" / "README.md").read_text()
    for bad in ("25x3x1.5", "25", "25x3x0.3x1", "0x3", "abcx3", "25x-1"):
        with pytest.raises(SystemExit):
            config_from_args(["--out", "x", "--eval-grid", bad])


def test_layout_warmup_trains_layout_scenes_at_the_pure_noise_end(tiny_run, tmp_path, monkeypatch):
    from kolors.errors import KolorsError
    from kolors.recipe.options import config_from_args
    from kolors.recipe.pool import CaptionTokens
    from kolors.recipe.trainer import DiffusionTrainer

    seen = []
    real_sample, real_step = CaptionTokens.sample, DiffusionTrainer.step
    monkeypatch.setattr(CaptionTokens, "sample", lambda self, items, **kw: (seen.append([items.clone()]),
                                                                           real_sample(self, items, **kw))[1])
    monkeypatch.setattr(DiffusionTrainer, "step", lambda self, *a, timesteps=None, **kw: (
        seen[-1].append(timesteps), real_step(self, *a, timesteps=timesteps, **kw))[1])
    config = RecipeConfig(
        out=tmp_path / "model", device="cpu", architecture="tiny", image_size=64, workers=1, pool_size=64,
        tokenizer_scenes=1000, steps_diffusion=6, batch_size=4, warmup_steps=1, log_seconds=0.0,
        checkpoint_minutes=1e9, skip_eval=True, init_from=tiny_run.out, layout_share=0.5, layout_warmup=4,
        prediction_type="v_prediction", zero_terminal_snr=True, min_snr_gamma=None, command="pytest",
    )
    run(config)
    layout = torch.load(tmp_path / "model.work" / "latents.pt", weights_only=False)["layout"]
    assert 0 < int(layout.sum()) < 64
    assert len(seen) == 6
    for items, timesteps in seen[:4]:  # warm-up: layout scenes only, every timestep at the pure-noise end
        assert bool(layout[items].all()) and bool((timesteps >= 1000).all()) and bool((timesteps < 1100).all())
    assert all(t is None for _, t in seen[4:])  # then the whole pool at the run's own timesteps
    assert not all(bool(layout[items].all()) for items, _ in seen[4:])
    # the warm-up needs its scenes and a schedule whose last step holds none of the image
    for argv in (["--layout-warmup", "10"], ["--layout-warmup", "10", "--layout-share", "0.3"],
                 ["--layout-warmup", "-1"]):
        with pytest.raises(SystemExit):
            config_from_args(["--out", "x", *argv])
    with pytest.raises(KolorsError, match="--layout-warmup needs layout scenes"):
        run(RecipeConfig(**{**config.__dict__, "out": tmp_path / "again", "layout_share": 0.0}))


def test_the_export_never_replaces_what_the_recipe_did_not_write(tiny_run, tmp_path):
    from kolors.errors import KolorsError

    base = dict(device="cpu", architecture="tiny", image_size=64, workers=1, pool_size=16, skip_eval=True)
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"someone's photo")
    beside = tmp_path / "model.old"
    beside.mkdir()
    (beside / "notes.txt").write_text("mine")
    for out, init, message in ((mine, None, "is not a model this recipe exported"),
                               (tmp_path / "model", None, "model.old exists and is not a model"),
                               (tiny_run.out, tiny_run.out, "would replace the model it reads"),
                               (tiny_run.out.parent, tiny_run.out, "would replace the model it reads")):
        with pytest.raises(KolorsError, match=message):
            run(RecipeConfig(out=out, init_from=init, **base))
    assert (mine / "holiday.jpg").read_bytes() == b"someone's photo" and (beside / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "photos.work").exists() and (tiny_run.out / "model_index.json").is_file()


def _short_run(tiny_run, out: Path, **overrides) -> RecipeConfig:
    """A few diffusion steps from the tiny model on a small pool (its VAE kept: no VAE training)."""
    return RecipeConfig(**{**dict(
        out=out, device="cpu", architecture="tiny", image_size=64, workers=1, pool_size=32, tokenizer_scenes=1000,
        steps_diffusion=6, batch_size=4, warmup_steps=2, ema_decay=0.9, log_seconds=0.0, checkpoint_minutes=1e9,
        skip_eval=True, init_from=tiny_run.out, command="pytest"), **overrides})


def test_a_decoder_only_finetune_keeps_the_latents_the_unet_learned(tiny_run, tmp_path):
    """--vae-finetune-part decoder trains the decoder alone: the encoder's weights, and so the pool's latents, are
    exactly the --init-from model's; the decoder's moved. The part needs the steps and the model to continue."""
    from diffusers import AutoencoderKL

    from kolors.recipe.options import config_from_args

    run(_short_run(tiny_run, tmp_path / "model", vae_finetune_steps=3, vae_finetune_part="decoder",
                   batch_size_vae=4, lr_vae=1e-3))
    old, new = (AutoencoderKL.from_pretrained(str(folder / "vae"), variant="fp16").state_dict()
                for folder in (tiny_run.out, tmp_path / "model"))
    moved = {key for key in old if not torch.equal(old[key], new[key])}
    assert moved and all(key.startswith(("decoder.", "post_quant_conv.")) for key in moved), sorted(moved)[:5]
    info = json.loads((tmp_path / "model.work" / "vae_info.json").read_text())
    assert info["steps_continued"] == 3
    for argv in (["--vae-finetune-part", "decoder"], ["--vae-finetune-part", "decoder", "--vae-finetune-steps", "5"],
                 ["--vae-finetune-part", "encoder", "--vae-finetune-steps", "5", "--init-from", "m"]):
        with pytest.raises(SystemExit):
            config_from_args(["--out", "x", *argv])


def test_the_decoder_tool_writes_a_copy_whose_encoder_unet_and_text_encoder_are_unchanged(tiny_run, tmp_path,
                                                                                           capsys):
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    from kolors.recipe.decoder import finetune_decoder, main

    out = tmp_path / "decoded"
    result = finetune_decoder(tiny_run.out, out, steps=2, scenes=16, test_scenes=6, lr=1e-3, device="cpu",
                              log=lambda line: None)
    assert result["steps"] == 2 and set(result["roundtrip_before"]) == set(result["roundtrip_after"])
    old, new = (AutoencoderKL.from_pretrained(str(f / "vae"), variant="fp16").state_dict() for f in (tiny_run.out, out))
    moved = {key for key in old if not torch.equal(old[key], new[key])}
    assert moved and all(key.startswith(("decoder.", "post_quant_conv.")) for key in moved)
    for part in ("unet", "text_encoder"):
        a, b = (load_file(next((f / part).glob("*.safetensors"))) for f in (tiny_run.out, out))
        assert all(torch.equal(a[k], b[k]) for k in a), part
    assert "## Decoder fine-tuned" in (out / "README.md").read_text()
    assert "_name_or_path" not in json.loads((out / "vae" / "config.json").read_text())
    # one line, nothing written, for what it must not replace or cannot read
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"someone's photo")
    for argv, message in (([str(tiny_run.out), "--out", str(mine)], "is not a model this recipe exported"),
                          ([str(tiny_run.out), "--out", str(tiny_run.out)], "would replace the model it reads"),
                          ([str(tmp_path / "nothing"), "--out", str(tmp_path / "x")], "nothing does not exist"),
                          ([str(mine), "--out", str(tmp_path / "x")],
                           "photos is not a model folder the recipe exported (no model_index.json, vae/)")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert (mine / "holiday.jpg").read_bytes() == b"someone's photo" and not (tmp_path / "x").exists()


def test_a_resumed_run_draws_and_ends_as_the_uninterrupted_one(tiny_run, tmp_path, monkeypatch):
    """Interrupted after 3 of 6 steps, a checkpoint is saved; --resume then ends with the weights of a run that was
    never stopped (every draw of a step comes from the run's seed and the step)."""
    from kolors.recipe.trainer import DiffusionTrainer

    run(_short_run(tiny_run, tmp_path / "whole"))
    real_step = DiffusionTrainer.step

    def stop_at_3(self, *args, **kwargs):
        if self.step_count == 3:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(DiffusionTrainer, "step", stop_at_3)
        with pytest.raises(KeyboardInterrupt):
            run(_short_run(tiny_run, tmp_path / "split"))
    saved = torch.load(tmp_path / "split.work" / "diffusion.pt", weights_only=False)
    assert saved["trainer"]["step"] == 3
    assert (tmp_path / "split" / "model_index.json").is_file()  # the partial export to look at
    stale = tmp_path / "split.work" / ".diffusion.pt.0123abcd.tmp"  # what kill -9 during a checkpoint leaves
    stale.write_bytes(b"half a checkpoint")
    run(_short_run(tiny_run, tmp_path / "split", resume=True))
    assert not stale.exists()
    whole, split = (torch.load(tmp_path / name / "diffusion.pt", weights_only=False)["trainer"]
                    for name in ("whole.work", "split.work"))
    assert whole["step"] == split["step"] == 6
    for part in ("unet", "text_encoder"):
        for key, value in whole[part].items():
            assert torch.equal(value, split[part][key]), (part, key)


def test_resume_names_the_training_options_it_changes(tiny_run, tmp_path, capsys):
    """--resume may change how the steps are trained (a lower --lr to finish), but says which options differ from
    the checkpoint's, once, in the log; with the same options it says nothing of the kind."""
    run(_short_run(tiny_run, tmp_path / "m", steps_diffusion=2, lr=1e-3, timestep_shift=3.0))
    capsys.readouterr()
    run(_short_run(tiny_run, tmp_path / "m", steps_diffusion=3, resume=True, lr=1e-3, timestep_shift=3.0))
    resumed = [line for line in capsys.readouterr().out.splitlines() if "resumed at step" in line]
    assert len(resumed) == 1 and resumed[0].endswith("diffusion: resumed at step 2")
    run(_short_run(tiny_run, tmp_path / "m", steps_diffusion=4, resume=True, lr=5e-4, timestep_shift=3.0,
                   ema_decay=0.0))
    resumed = [line for line in capsys.readouterr().out.splitlines() if "resumed at step" in line]
    assert len(resumed) == 1 and resumed[0].endswith(
        "diffusion: resumed at step 3; changed since its checkpoint: --lr 0.001 → 0.0005, --ema-decay 0.9 → 0")


def test_resume_refuses_pool_options_other_than_its_pool_was_made_with(tiny_run, tmp_path):
    """--resume reuses the rendered pool: asking for a different one is a one-line error with nothing changed
    (before, the new options were silently ignored); the same options resume."""
    from kolors.errors import KolorsError

    made = {"layout_share": 0.25, "count_mix": "2=1,3=1"}
    run(_short_run(tiny_run, tmp_path / "m", steps_diffusion=2, **made))
    assert json.loads((tmp_path / "m.work" / "pool.json").read_text())["layout_share"] == 0.25
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "m.work").rglob("*")}
    asks = [({**made, "layout_share": 0.5}, "made with --layout-share 0.25; this run asks for --layout-share 0.5"),
            ({**made, "layout_background": ("black", "white"), "pool_size": 40},
             "made with --pool-size 32, --layout-background white; this run asks for --pool-size 40, "
             "--layout-background black white"),
            ({**made, "scene_mix": "pair=1"},
             "made with no --scene-mix; this run asks for --scene-mix single=0,count=0,pair=1"),
            ({**made, "count_mix": "3=1"},
             "made with --count-mix 1=0,2=1,3=1; this run asks for --count-mix 1=0,2=0,3=1"),
            ({"layout_share": 0.25}, "made with --count-mix 1=0,2=1,3=1; this run asks for no --count-mix")]
    for options, message in asks:
        with pytest.raises(KolorsError, match=re.escape(message) + ": resume with the options it was made with, "
                           "or give a new --work-dir"):
            run(_short_run(tiny_run, tmp_path / "m", steps_diffusion=4, resume=True, **options))
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "m.work").rglob("*")} == before
    # the same mix, written another way, is the same pool (the recorded weights are read back from JSON)
    run(_short_run(tiny_run, tmp_path / "m", steps_diffusion=4, resume=True, **{**made, "count_mix": "3=1,2=1.0"}))
    assert torch.load(tmp_path / "m.work" / "diffusion.pt", weights_only=False)["trainer"]["step"] == 4
    (tmp_path / "m.work" / "pool.json").write_text("{half")
    with pytest.raises(KolorsError, match="pool.json is not the JSON this recipe writes"):
        run(_short_run(tiny_run, tmp_path / "m", steps_diffusion=5, resume=True, **made))


def test_sigterm_saves_a_checkpoint_and_ends_with_one_line(tiny_run, tmp_path):
    """A real SIGTERM to ``python -m kolors.recipe`` during training: exit 143, one line on stderr, the checkpoint
    of the step it stopped at, and --resume goes on from there."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "model"
    argv = [sys.executable, "-m", "kolors.recipe", "--out", str(out), "--device", "cpu", "--architecture", "tiny",
            "--image-size", "64", "--workers", "1", "--pool-size", "32", "--tokenizer-scenes", "1000",
            "--batch-size", "4", "--log-seconds", "0", "--skip-eval", "--init-from", str(tiny_run.out)]
    proc = subprocess.Popen([*argv, "--steps-diffusion", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # wait until it trains
        if "diffusion step" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "python -m kolors.recipe: error: terminated" and "Traceback" not in stderr
    step = torch.load(out.with_name("model.work") / "diffusion.pt", weights_only=False)["trainer"]["step"]
    assert step >= 10 and f"interrupted at step {step}; checkpoint saved" in stdout
    done = subprocess.run([*argv, "--resume", "--steps-diffusion", str(step + 2)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"resumed at step {step}" in done.stdout and (out / "model_index.json").is_file()


@pytest.mark.parametrize(("seconds", "stamp"), [(59.96, "[  1:00.0]"), (59.94, "[  0:59.9]"), (4079.97, "[ 68:00.0]"),
                                                (61.25, "[  1:01.2]")])
def test_a_log_line_is_stamped_in_minutes_and_seconds_that_never_read_60(seconds, stamp, capsys, monkeypatch):
    from kolors.recipe import run as run_module

    log = run_module.Log(start=1000.0)
    monkeypatch.setattr(run_module.time, "monotonic", lambda: 1000.0 + seconds)
    log("diffusion step 1/2")
    assert capsys.readouterr().out == f"{stamp} diffusion step 1/2\n"
