"""The word probe: swaps change exactly one attribute (or exchange two objects' colours), the built-in model is found
to use the words it follows in images, a model that ignores them (or their order) scores 0, and bad options are one
line."""

from __future__ import annotations

import pytest
import torch

from kolors.data.shapes import allowed_backgrounds
from kolors.evaluation import word_probe as W
from kolors.pipelines.pipeline import Pipeline


def _attributes(scene):
    s = scene.shapes[0]
    return {"colour": s.colour, "shape": s.shape, "position": s.position, "background": scene.background}


def test_each_swap_changes_only_its_attribute_and_its_words():
    for scene in W.probe_scenes(60, seed=3):
        before = _attributes(scene)
        for attribute in W.ATTRIBUTES:
            after = _attributes(W.swapped(scene, attribute))
            assert {k for k in before if before[k] != after[k]} == {attribute}
            assert after["background"] in allowed_backgrounds([after["colour"]])
            for lang in ("en", "zh"):
                assert W.probe_caption(scene, lang) != W.probe_caption(W.swapped(scene, attribute), lang)
    with pytest.raises(ValueError, match="attribute must be one of"):
        W.swapped(scene, "size")
    with pytest.raises(ValueError, match="two-object scenes only"):
        W.swapped(scene, "binding")


def test_the_binding_swap_exchanges_the_colours_and_keeps_every_word():
    for scene in W.probe_pair_scenes(40, seed=3):
        (a, b), (a2, b2) = scene.shapes, W.swapped(scene, "binding").shapes
        assert (a2.colour, b2.colour) == (b.colour, a.colour) and a.colour != b.colour and a.shape != b.shape
        assert [(s.shape, s.size, s.position, s.dx, s.dy) for s in (a, b)] == \
            [(s.shape, s.size, s.position, s.dx, s.dy) for s in (a2, b2)]
        for lang in ("en", "zh"):
            true, wrong = W.probe_caption(scene, lang), W.probe_caption(W.swapped(scene, "binding"), lang)
            assert true != wrong and sorted(true) == sorted(wrong)  # the same characters, attached otherwise


def test_the_one_shape_swap_names_the_first_shape_for_both_objects():
    for scene in W.probe_pair_scenes(40, seed=3):
        (a, b), (a2, b2) = scene.shapes, W.swapped(scene, "one-shape").shapes
        assert (a2.shape, b2.shape) == (a.shape, a.shape) != (a.shape, b.shape)
        assert [(s.colour, s.position) for s in (a, b)] == [(s.colour, s.position) for s in (a2, b2)]
        assert all(W.probe_caption(scene, lang) != W.probe_caption(W.swapped(scene, "one-shape"), lang)
                   for lang in ("en", "zh"))
    single = W.probe_scenes(1)[0]
    with pytest.raises(ValueError, match="one-shape is swapped in two-object scenes only"):
        W.swapped(single, "one-shape")


def test_the_probe_tells_the_words_the_builtin_model_uses_from_those_it_ignores(monkeypatch):
    monkeypatch.delenv("KOLORS_MODEL", raising=False)
    pipe = Pipeline.from_pretrained(device="cpu")
    scenes = W.probe_scenes(8)
    report = W.word_probe(pipe, scenes, timesteps=(600,))
    for lang in ("en", "zh"):
        # The built-in model draws colour, shape, background and position as asked: the loss rises by tens of
        # percent with any of those words swapped (v1, which ignored position, gave |position| < 0.1%).
        for word in ("colour", "shape", "position", "background"):
            assert report[word][lang][600] > 10, (word, report)
    table = W.format_probe(report)
    assert "| position | zh |" in table and "t=600" in table
    # A model that reads the prompt as one fixed text ignores every word: the probe reports no change.
    first = pipe.encode_prompt("a red circle", guidance=False)
    real_encode = pipe.encode_prompt
    monkeypatch.setattr(pipe, "encode_prompt", lambda text, guidance=True: first)
    deaf = W.word_probe(pipe, scenes, pair_scenes=W.probe_pair_scenes(4), timesteps=(600,))
    for word in ("colour", "shape", "position", "background", "binding", "one-shape"):
        assert all(abs(deaf[word][lang][600]) < 1e-6 for lang in ("en", "zh")), (word, deaf)
    # A model that reads a prompt's characters as a bag (sorted) uses every word but not which noun a colour
    # belongs to: binding 0, colour as before.
    monkeypatch.setattr(pipe, "encode_prompt", lambda text, guidance=True: real_encode("".join(sorted(text)),
                                                                                      guidance=guidance))
    bag = W.word_probe(pipe, scenes, pair_scenes=W.probe_pair_scenes(4), timesteps=(600,))
    for lang in ("en", "zh"):
        assert abs(bag["binding"][lang][600]) < 1e-6 and abs(bag["colour"][lang][600]) > 1, bag


def test_the_attention_table_reads_where_the_words_are_read(monkeypatch):
    monkeypatch.delenv("KOLORS_MODEL", raising=False)
    pipe = Pipeline.from_pretrained(device="cpu")
    pairs = W.probe_pair_scenes(6)
    report = W.word_probe(pipe, W.probe_scenes(1), pair_scenes=pairs, timesteps=(300, 900))
    for lang in ("en", "zh"):
        for t in (300, 900):
            share, chance = report["attention"][lang][t]
            assert 3 < chance < 30 and share > chance + 1, report["attention"]  # the built-in model reads its words a little locally
    assert "| attention | zh | " in W.format_probe(report)
    # Queries of zero make every cell attend to the tokens alike: each word is read evenly over the image, the
    # share on its object is exactly the object's area.
    for name, module in pipe.components.unet.named_modules():
        if name.endswith("attn2"):
            torch.nn.init.zeros_(module.to_q.weight)
    even = W.word_probe(pipe, W.probe_scenes(1), pair_scenes=pairs, timesteps=(300,))
    for lang in ("en", "zh"):
        share, chance = even["attention"][lang][300]
        assert share == pytest.approx(chance, abs=1e-3), even["attention"]


@pytest.mark.parametrize("args, message", [
    (["--timesteps", "5000"], "timesteps must lie in 0..1099"),
    (["--timesteps", "a,b"], "expected comma-separated whole numbers"),
    (["--scenes", "0"], "--scenes must be 1 to 512"),
    (["--pairs", "-1"], "--pairs must be 0 to 512"),
    (["--json", "no/such/folder/probe.json"], "the folder no/such/folder does not exist"),
])
def test_bad_options_are_one_line(args, message, capsys, monkeypatch):
    monkeypatch.delenv("KOLORS_MODEL", raising=False)
    try:
        code = W.main(args + ["--device", "cpu"])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)


def test_in_a_fresh_process_the_probe_prints_its_table_and_nothing_else(tmp_path, monkeypatch):
    """Loading a model imports diffusers and transformers, whose optional parts and deprecations logged eight lines
    (torchao's kernels, torch's pytree, bitsandbytes, transformers' renamed arguments) around the table."""
    import subprocess
    import sys

    monkeypatch.delenv("KOLORS_MODEL", raising=False)
    done = subprocess.run([sys.executable, "-m", "kolors.evaluation.word_probe", "--scenes", "1", "--pairs", "1",
                           "--timesteps", "600", "--device", "cpu"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, check=False)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "| one-shape | zh |" in done.stdout
