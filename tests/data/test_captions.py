"""Captions of shapes scenes: they say what the scene shows, vary, and keep held-out wordings out of training."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from kolors.data import captions as T
from kolors.data import shapes as S

# Word → attribute tables written independently of the module: the tests map caption words back to attributes.
EN_COLOUR = {c: c for c in ("red", "green", "blue", "yellow", "purple", "orange", "white", "black", "pink", "brown")}
EN_SHAPE = {"circle": "circle", "disk": "circle", "square": "square", "triangle": "triangle"}
EN_PLURAL = {w + "s": s for w, s in EN_SHAPE.items()}
EN_COUNT = {"one": 1, "two": 2, "three": 3}
EN_RELATION = [("to the left of", "left"), ("on the left of", "left"), ("left of", "left"),
               ("to the right of", "right"), ("on the right of", "right"), ("right of", "right"), ("above", "above"), ("over", "above"),
               ("below", "below"), ("under", "below"), ("beneath", "below")]
ZH_COLOUR = [("粉红色", "pink"), ("粉色", "pink"), ("红", "red"), ("绿", "green"), ("蓝", "blue"), ("黄", "yellow"),
             ("紫", "purple"), ("橙", "orange"), ("橘", "orange"), ("白", "white"), ("黑", "black"), ("棕", "brown"),
             ("褐", "brown")]
ZH_SHAPE = [("正方形", "square"), ("方块", "square"), ("方形", "square"), ("三角", "triangle"), ("圆", "circle")]
ZH_RELATION = [("左边", "left"), ("左侧", "left"), ("右边", "right"), ("右侧", "right"), ("上方", "above"),
               ("上面", "above"), ("下方", "below"), ("下面", "below")]
ZH_COUNT = {"一个": 1, "两个": 2, "三个": 3}
EN_BG = r"(white|gray|grey|black|beige) background|background is (white|gray|grey|black|beige)"
ZH_BG = r"(白色|灰色|黑色|米色)背景|背景(是|为)(白色|灰色|黑色|米色)"


def _scan(text: str, table: list[tuple[str, str]]) -> list[str]:
    """Values of the table's words in ``text``, longest words first, each stretch of text used once."""
    found = []
    for word, value in sorted(table, key=lambda wv: -len(wv[0])):
        while word in text:
            found.append(value)
            text = text.replace(word, "|", 1)
    return found


def colours_named(text: str, lang: str) -> set[str]:
    if lang == "en":
        return {EN_COLOUR[w] for w in re.findall(r"[a-z]+", re.sub(EN_BG, "", text)) if w in EN_COLOUR}
    return set(_scan(re.sub(ZH_BG, "", text), ZH_COLOUR))


def shapes_named(text: str, lang: str) -> set[str]:
    if lang == "en":
        words = re.findall(r"[a-z]+", text)
        return {EN_SHAPE.get(w) or EN_PLURAL[w] for w in words if w in EN_SHAPE or w in EN_PLURAL}
    return set(_scan(text, ZH_SHAPE))


@pytest.fixture(scope="module")
def train_captions():
    rng = np.random.default_rng(0)
    scenes = [S.sample_scene(rng, "train") for _ in range(5000)]
    return [(T.caption_with_template(s, lang, rng), s) for s in scenes for lang in S.LANGS]


@pytest.fixture(scope="module")
def heldout_captions():
    rng = np.random.default_rng(1)
    scenes = [S.sample_scene(rng, "heldout", kind) for kind in S.KINDS for _ in range(700)]
    return [(T.caption_with_template(s, lang, rng), s) for s in scenes for lang in S.LANGS]


def _template(tid: str) -> str:
    lang, split, kind, k = tid.split("/")
    return T.TEMPLATES[lang][split][kind][int(k)]


def test_captions_say_what_the_scene_shows(train_captions, heldout_captions):
    for (text, tid), scene in train_captions + heldout_captions:
        lang = tid[:2]
        slots = T.template_slots(_template(tid))
        colours, kinds = {s.colour for s in scene.shapes}, {s.shape for s in scene.shapes}
        named = colours_named(text, lang)
        assert named == colours if slots & {"col", "colL", "a"} else not named, (text, scene)
        assert shapes_named(text, lang) == kinds, (text, scene)
        if scene.kind == "count" and "num" in slots:
            numbers = [EN_COUNT[w] for w in re.findall(r"[a-z]+", text) if w in EN_COUNT] if lang == "en" else \
                [n for w, n in ZH_COUNT.items() if w in text]
            assert numbers == [scene.count], (text, scene)
        if "rel" in slots:
            relation = _scan(text, EN_RELATION) if lang == "en" else _scan(text.replace("背景上", ""), ZH_RELATION)
            assert relation == [scene.relation], (text, scene)


def test_stated_positions_and_backgrounds_are_the_scenes(train_captions):
    position_words = {lang: {w: p for p, ws in words["position"].items() for w in ws}
                      for lang, words in (("en", T.EN_WORDS), ("zh", T.ZH_WORDS))}
    for (text, tid), scene in train_captions:
        lang, slots = tid[:2], T.template_slots(_template(tid))
        if scene.kind == "single" and "pos" in slots:
            said = [p for w, p in sorted(position_words[lang].items(), key=lambda x: -len(x[0])) if w in text]
            assert said and said[0] == scene.shapes[0].position, (text, scene)
        if "bg" in slots:
            match = re.search(EN_BG if lang == "en" else ZH_BG, text)
            word = next(g for g in match.groups() if g and g not in ("是", "为"))
            assert {"grey": "gray", "白色": "white", "灰色": "gray", "黑色": "black", "米色": "beige"}.get(word, word) \
                == scene.background, (text, scene)


def test_captions_are_varied_and_some_leave_attributes_unstated(train_captions):
    by_lang = {lang: [(t, tid) for (t, tid), _ in train_captions if tid.startswith(lang)] for lang in S.LANGS}
    for lang, rows in by_lang.items():
        assert len({t for t, _ in rows}) > 3000
        used = {tid for _, tid in rows}
        assert used == {f"{lang}/train/{kind}/{k}" for kind, ts in T.TEMPLATES[lang]["train"].items()
                        for k in range(len(ts))}
        slots = [T.template_slots(_template(tid)) for _, tid in rows]
        for attribute in ("pos", "bg"):
            assert 0.2 < np.mean([attribute in s or (attribute == "pos" and "p1" in s) for s in slots]) < 0.7
        assert any(not s & {"col", "colL", "a"} for s in slots)  # colour unstated
    texts = {t for (t, _), _ in train_captions}
    assert {"a red circle", "an orange circle", "two red circles"} & texts
    assert not any(re.search(r"\ba [aeiou]", t) for t in texts)
    assert any("在" in t and "的左边" in t for t in texts) and any(" to the left of " in t for t in texts)
    assert any(t.startswith("两个") for t in texts) and any(t.startswith("three ") for t in texts)


def test_and_is_not_only_between_two_objects(train_captions):
    """A conjunction alone must not mean "two objects": captions of one shape (and of counts) use it too."""
    for lang, word in (("en", " and "), ("zh", "和")):
        kinds = {scene.kind for (text, tid), scene in train_captions if tid.startswith(lang) and word in text}
        assert kinds == set(S.KINDS), (lang, kinds)


def test_captions_of_a_scene_follow_its_split():
    rng = np.random.default_rng(7)
    scene = S.sample_scene(rng, "heldout")
    assert scene.split == "heldout" and scene.kind == "single"
    assert T.caption_with_template(scene, "en", rng)[1].startswith("en/heldout/single/")
    assert T.caption_with_template(scene, "zh", rng, split="train")[1].startswith("zh/train/")
    text, tid = T.caption_with_template(scene, "en", rng, states="pos")
    assert "{pos}" in _template(tid)
    with pytest.raises(ValueError):
        T.caption(scene, "fr", rng)


def test_heldout_wordings_never_appear_in_training(train_captions, heldout_captions):
    assert all("/train/" in tid for (_, tid), _ in train_captions)
    assert all("/heldout/" in tid for (_, tid), _ in heldout_captions)
    assert not {t for (t, _), _ in train_captions} & {t for (t, _), _ in heldout_captions}


def _realisations(lang: str, split: str, scene: S.Scene) -> set[str]:
    """Every caption the single-scene templates of ``split`` can give ``scene`` (all synonym choices)."""
    words = T.EN_WORDS if lang == "en" else T.ZH_WORDS
    sh = scene.shapes[0]
    options = {
        "col": words["colour"][sh.colour],
        "colL": words["colour"][sh.colour][:1],
        "shp": words["shape"][sh.shape],
        "sz": words["size"][sh.size],
        "pos": words["position"][sh.position],
        "bg": words["background"][scene.background],
    }
    return {template.format(**dict(zip(options, values)))
            for template in T.TEMPLATES[lang][split]["single"] for values in itertools.product(*options.values())}


def test_heldout_wordings_cannot_be_produced_by_training_templates():
    for colour, shape in itertools.product(S.COLOURS, S.SHAPES):
        background = S.allowed_backgrounds({colour})[0]
        scene = S.Scene(shapes=(S.Shape(shape, colour, "small", "top-left"),), background=background)
        for lang in S.LANGS:
            assert not _realisations(lang, "train", scene) & _realisations(lang, "heldout", scene)


def test_heldout_wordings_only_use_training_vocabulary(train_captions, heldout_captions):
    def en_words(rows):
        return {w for (t, tid), _ in rows if tid.startswith("en") for w in re.findall(r"[^\s,:]+", t)}

    def zh_chars(rows):
        return {ch for (t, tid), _ in rows if tid.startswith("zh") for ch in t}

    assert en_words(heldout_captions) <= en_words(train_captions)
    assert zh_chars(heldout_captions) <= zh_chars(train_captions)
