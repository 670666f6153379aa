"""Captions of shapes scenes in English and Chinese: words with synonyms, templates per scene kind and split.

A template's slots say what its caption states; templates without ``{pos}``, ``{bg}``, ``{sz}`` or ``{col}`` leave
that attribute unstated (the image may show anything for it). Slots:

* single scenes: ``{col}`` colour (any form), ``{colL}`` colour (long form, Chinese: 红色), ``{shp}``, ``{sz}``,
  ``{pos}``, ``{bg}``;
* count scenes: the same plus ``{num}`` (one/two/three, 一个/两个/三个), English ``{shps}`` (the noun, plural
  for more than one) and ``{be}`` (is/are);
* pair scenes: ``{a}``/``{b}`` noun phrases of the first and second object, ``{rel}`` the first's relation to the
  second ("to the left of", 左边), ``{p1}``/``{p2}`` their positions, ``{bg}``.

"and" / 和 also join a shape to its background or its attributes in captions of one shape, not only two objects:
a model trained with "and" only between objects drew two shapes for "the square is small and red" (docs/evaluation.md,
"One object, one shape").

Each language has held-out templates per kind that training captions never use; they only recombine words
(English) / characters (Chinese) of training captions, so a tokenizer trained on training captions covers them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .shapes import LANGS, SPLITS, Scene, Shape

__all__ = ["EN_WORDS", "ZH_WORDS", "TEMPLATES", "caption", "caption_with_template", "template_slots"]

# Words and their synonyms, per attribute value.
EN_WORDS = {
    "colour": {"red": ["red"], "green": ["green"], "blue": ["blue"], "yellow": ["yellow"], "purple": ["purple"],
               "orange": ["orange"], "white": ["white"], "black": ["black"], "pink": ["pink"], "brown": ["brown"]},
    "shape": {"circle": ["circle", "disk"], "square": ["square"], "triangle": ["triangle"]},
    "size": {"small": ["small", "little"], "medium": ["medium", "medium-sized"], "large": ["large", "big"]},
    "position": {
        "top-left": ["in the top left corner", "at the top left", "in the upper left", "in the top left"],
        "top": ["at the top", "near the top", "at the top of the picture"],
        "top-right": ["in the top right corner", "at the top right", "in the upper right", "in the top right"],
        "left": ["on the left", "on the left side", "at the left"],
        "center": ["in the center", "in the middle", "in the centre"],
        "right": ["on the right", "on the right side", "at the right"],
        "bottom-left": ["in the bottom left corner", "at the bottom left", "in the lower left", "in the bottom left"],
        "bottom": ["at the bottom", "near the bottom", "at the bottom of the picture"],
        "bottom-right": ["in the bottom right corner", "at the bottom right", "in the lower right",
                         "in the bottom right"],
    },
    "background": {"white": ["white"], "gray": ["gray", "grey"], "black": ["black"], "beige": ["beige"]},
    "relation": {"left": ["to the left of", "left of", "on the left of"],
                 "right": ["to the right of", "right of", "on the right of"],
                 "above": ["above", "over"], "below": ["below", "under", "beneath"]},
    "count": {1: ["one"], 2: ["two"], 3: ["three"]},
}
ZH_WORDS = {
    "colour": {"red": ["红色", "红"], "green": ["绿色", "绿"], "blue": ["蓝色", "蓝"], "yellow": ["黄色", "黄"],
               "purple": ["紫色", "紫"], "orange": ["橙色", "橘色", "橙"], "white": ["白色", "白"],
               "black": ["黑色", "黑"], "pink": ["粉色", "粉红色"], "brown": ["棕色", "褐色"]},
    "shape": {"circle": ["圆形", "圆", "圆圈"], "square": ["正方形", "方块", "方形"], "triangle": ["三角形", "三角"]},
    "size": {"small": ["小", "小的"], "medium": ["中等大小的", "中号"], "large": ["大", "大的"]},
    "position": {
        "top-left": ["左上角", "左上方"],
        "top": ["上方", "顶部", "上面"],
        "top-right": ["右上角", "右上方"],
        "left": ["左边", "左侧"],
        "center": ["中间", "中央", "正中间"],
        "right": ["右边", "右侧"],
        "bottom-left": ["左下角", "左下方"],
        "bottom": ["下方", "底部", "下面"],
        "bottom-right": ["右下角", "右下方"],
    },
    "background": {"white": ["白色"], "gray": ["灰色"], "black": ["黑色"], "beige": ["米色"]},
    "relation": {"left": ["左边", "左侧"], "right": ["右边", "右侧"], "above": ["上方", "上面"],
                 "below": ["下方", "下面"]},
    "count": {1: ["一个"], 2: ["两个"], 3: ["三个"]},
}
_WORDS = {"en": EN_WORDS, "zh": ZH_WORDS}
_EN_PLURAL = {"circle": "circles", "disk": "disks", "square": "squares", "triangle": "triangles"}

TEMPLATES: dict[str, dict[str, dict[str, list[str]]]] = {
    "en": {
        "train": {
            "single": [
                "a {col} {shp}",
                "{col} {shp}",
                "a {sz} {col} {shp}",
                "a {col} {shp} {pos}",
                "a {sz} {col} {shp} {pos}",
                "{col} {shp}, {bg} background",
                "a {col} {shp} on a {bg} background",
                "a {sz} {col} {shp} on a {bg} background",
                "a {col} {shp} {pos} on a {bg} background",
                "a picture of a {sz} {col} {shp} {pos}",
                "a picture of a {col} {shp}",
                "an image of a {col} {shp} {pos}",
                "there is a {col} {shp} {pos}",
                "there is a {sz} {col} {shp} on a {bg} background",
                "{sz} {col} {shp} {pos}, {bg} background",
                "a drawing of a {col} {shp} on a {bg} background",
                "a simple drawing of a {sz} {col} {shp}",
                "a {bg} background with a {col} {shp} {pos}",
                "one {col} {shp}",
                "a single {sz} {col} {shp} {pos} on a {bg} background",
                "{pos}, a {sz} {col} {shp}",
                "{pos}, a {col} {shp} on a {bg} background",
                "a {shp} in {col}",
                "a {sz} {shp} in {col} {pos}",
                "a {col} {shp} against a {bg} background",
                "the background is {bg}, with a {col} {shp} {pos}",
                "a {shp} {pos}",
                "a {sz} {shp} on a {bg} background",
                "a {col} {shp}, and the background is {bg}",
                "a {shp} {pos}, {col} and {sz}",
                "a {sz} {col} {shp} and nothing else",
            ],
            "count": [
                "{num} {col} {shps}",
                "{num} {sz} {col} {shps}",
                "there {be} {num} {col} {shps}",
                "{num} {col} {shps} on a {bg} background",
                "a picture of {num} {col} {shps}",
                "a {bg} background with {num} {col} {shps}",
                "exactly {num} {col} {shps}",
                "{num} {col} {shps}, {bg} background",
                "{num} {shps}",
                "{num} {col} {shps} and a {bg} background",
            ],
            "pair": [
                "{a} {rel} {b}",
                "{a} {rel} {b} on a {bg} background",
                "a picture of {a} {rel} {b}",
                "there is {a} {rel} {b}",
                "{a} and {b}",
                "{a} and {b} on a {bg} background",
                "two shapes: {a} and {b}",
                "{a} {p1} and {b} {p2}",
                "a picture of {a} {p1} and {b} {p2}",
                "{a} {p1}, {b} {p2}, {bg} background",
            ],
        },
        "heldout": {
            "single": [
                "the {shp} is {col}",
                "{bg} background, a {sz} {col} {shp}",
                "an image of one {col} {shp} on a {bg} background",
                "{pos} there is a {sz} {col} {shp}",
                "{col} {shp} {pos}",
                "the {shp} is {sz} and {col}",
                "a simple picture of a {col} {shp} {pos}",
                "one {sz} {col} {shp} on a {bg} background",
                "{bg} background and a {col} {shp} {pos}",
            ],
            "count": [
                "an image with {num} {col} {shps}",
                "{bg} background, {num} {sz} {col} {shps}",
                "there {be} {num} {col} {shps} in the picture",
            ],
            "pair": [
                "{a} is {rel} {b}",
                "{bg} background, {a} {rel} {b}",
                "an image of {a} {rel} {b}",
            ],
        },
    },
    "zh": {
        "train": {
            "single": [
                "一个{colL}的{shp}",
                "{col}{shp}",
                "一个{col}{shp}",
                "一个{sz}{col}{shp}",
                "{pos}有一个{col}{shp}",
                "{pos}有一个{sz}{col}{shp}",
                "{bg}背景上的{col}{shp}",
                "{bg}背景上有一个{sz}{col}{shp}",
                "画面{pos}是一个{col}{shp}",
                "画面{pos}是一个{sz}{colL}的{shp}",
                "一张图片，{pos}有一个{colL}的{shp}",
                "{colL}的{shp}，{bg}背景",
                "在{bg}背景上，{pos}画着一个{sz}{col}{shp}",
                "一幅简单的画：一个{col}{shp}",
                "图中有一个{sz}{col}{shp}，位于{pos}",
                "这张图片里有一个{colL}的{shp}",
                "{sz}{col}{shp}，在{pos}",
                "一个{shp}，颜色是{colL}",
                "只有一个{col}{shp}",
                "一个{colL}的{shp}位于画面{pos}",
                "一个{col}{shp}在画面的{pos}",
                "背景是{bg}的，{pos}有一个{col}{shp}",
                "{bg}背景，一个{colL}的{shp}在画面{pos}",
                "背景为{bg}，画着一个{col}{shp}",
                "{pos}有一个{shp}",
                "{bg}背景上有一个{sz}{shp}",
                "{bg}背景和一个{colL}的{shp}",
            ],
            "count": [
                "{num}{colL}的{shp}",
                "{num}{col}{shp}",
                "画面中有{num}{col}{shp}",
                "{bg}背景上有{num}{sz}{col}{shp}",
                "有{num}{colL}的{shp}",
                "一张图片，里面有{num}{col}{shp}",
                "{bg}背景，{num}{col}{shp}",
                "只有{num}{colL}的{shp}",
                "{num}{shp}",
                "{num}{col}{shp}和{bg}背景",
            ],
            "pair": [
                "{a}在{b}的{rel}",
                "{a}在{b}{rel}",
                "{b}的{rel}有{a}",
                "{bg}背景上，{a}在{b}的{rel}",
                "{a}和{b}",
                "{bg}背景上有{a}和{b}",
                "两个图形：{a}和{b}",
                "{p1}是{a}，{p2}是{b}",
                "{p1}有{a}，{p2}有{b}",
                "画面中有{a}和{b}",
            ],
        },
        "heldout": {
            "single": [
                "{shp}是{colL}的",
                "{bg}背景，{pos}一个{sz}{col}{shp}",
                "这是一个{sz}{col}{shp}",
                "图片{pos}有{colL}的{shp}",
                "{pos}画着一个{col}{shp}",
                "画面里只有一个{colL}的{shp}",
                "一个{colL}的{shp}在{pos}",
                "{bg}背景上画着一个{col}{shp}",
                "位于画面{pos}的是一个{col}{shp}",
            ],
            "count": [
                "图中有{num}{colL}的{shp}",
                "这里有{num}{sz}{col}{shp}",
                "{bg}背景上画着{num}{col}{shp}",
            ],
            "pair": [
                "{a}位于{b}的{rel}",
                "{b}的{rel}是{a}",
                "{bg}背景，{a}在{b}的{rel}",
            ],
        },
    },
}

_SLOT = re.compile(r"\{(\w+)\}")
_ARTICLE = re.compile(r"\b(a|an) (?=(\w))")


def template_slots(template: str) -> set[str]:
    """The slot names of ``template`` (what its caption states)."""
    return set(_SLOT.findall(template))


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))] if len(options) > 1 else options[0]


def _slots(shape: Shape, background: str, lang: str, rng: np.random.Generator) -> dict[str, str]:
    w = _WORDS[lang]
    return {
        "col": _pick(rng, w["colour"][shape.colour]),
        "colL": w["colour"][shape.colour][0],
        "shp": _pick(rng, w["shape"][shape.shape]),
        "sz": _pick(rng, w["size"][shape.size]),
        "pos": _pick(rng, w["position"][shape.position]),
        "bg": _pick(rng, w["background"][background]),
    }


def _noun_phrase(slots: dict[str, str], lang: str, rng: np.random.Generator) -> str:
    with_size = rng.random() < 0.3
    if lang == "en":
        return f"a {slots['sz']} {slots['col']} {slots['shp']}" if with_size else f"a {slots['col']} {slots['shp']}"
    k = int(rng.integers(3))
    if k == 0:
        return "一个" + (slots["sz"] if with_size else "") + slots["col"] + slots["shp"]
    if k == 1:
        return f"一个{slots['colL']}的{slots['shp']}"
    return f"{slots['sz']}{slots['col']}{slots['shp']}" if with_size else f"{slots['col']}{slots['shp']}"


def _fill(scene: Scene, template: str, lang: str, rng: np.random.Generator) -> str:
    w = _WORDS[lang]
    first = _slots(scene.shapes[0], scene.background, lang, rng)
    if scene.kind == "pair":
        second = _slots(scene.shapes[1], scene.background, lang, rng)
        values = {"a": _noun_phrase(first, lang, rng), "b": _noun_phrase(second, lang, rng),
                  "p1": first["pos"], "p2": second["pos"], "bg": first["bg"]}
        if scene.relation is not None:
            values["rel"] = _pick(rng, w["relation"][scene.relation])
    else:
        values = dict(first)
        if scene.kind == "count":
            n = scene.count
            values["num"] = w["count"][n][0]
            if lang == "en":
                values["shps"] = _EN_PLURAL[first["shp"]] if n > 1 else first["shp"]
                values["be"] = "are" if n > 1 else "is"
    text = template.format(**values)
    if lang == "en":  # "a orange circle" → "an orange circle"
        text = _ARTICLE.sub(lambda m: ("an " if m.group(2) in "aeiou" else "a "), text)
    return text


def caption_with_template(
    scene: Scene, lang: str, rng: np.random.Generator, split: str | None = None, *, states: str | None = None
) -> tuple[str, str]:
    """(caption, template id such as ``"en/train/single/3"``) of ``scene`` in ``lang`` with ``split``'s wordings.

    ``states`` (a slot name, e.g. ``"pos"`` or ``"bg"``) limits the choice to templates that state it; ``"plain"``
    to templates stating neither position nor background. A pair scene without a relation uses relation-free
    templates.
    """
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(LANGS)}, not {lang!r}")
    split = split or scene.split
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    templates = TEMPLATES[lang][split][scene.kind]
    choices = [k for k, t in enumerate(templates) if _usable(template_slots(t), scene, states)]
    if not choices:
        raise ValueError(f"no {lang} {split} {scene.kind} wording states {states!r}")
    k = choices[int(rng.integers(len(choices)))]
    return _fill(scene, templates[k], lang, rng), f"{lang}/{split}/{scene.kind}/{k}"


def _usable(slots: set[str], scene: Scene, states: str | None) -> bool:
    if scene.kind == "pair" and scene.relation is None and "rel" in slots:
        return False
    if states is None:
        return True
    if states == "plain":
        return not slots & {"pos", "bg", "p1"}
    return states in slots


def caption(scene: Scene, lang: str, rng: np.random.Generator, split: str | None = None) -> str:
    """A random caption of ``scene`` in ``lang`` ("en"/"zh"), worded from ``split`` (default: ``scene.split``)."""
    return caption_with_template(scene, lang, rng, split)[0]
