"""Which words of a caption name which object of its scene: the character spans of colour and shape words, each with
the objects it names (a bit mask over ``scene.shapes``).

A colour word opens a noun phrase that the next shape word closes ("a big red circle", "一个红色的圆形"); the phrase
names the objects of that colour and shape. A shape word with no colour before it names every object of its shape
("two squares"), a colour word with no shape after it every object of its colour. A word that names no object (the
background's colour, "白色背景") gets no span, and does not open a phrase. Words are matched longest first, so
"粉红色" (pink) is not read as "红色" (red), nor "正方形" as "方形".
"""

from __future__ import annotations

import re

from .captions import EN_WORDS, ZH_WORDS
from .shapes import Scene

__all__ = ["object_spans"]

_EN_PLURAL = {"circle": ["circles", "disks"], "square": ["squares"], "triangle": ["triangles"]}


def _pattern(lang: str) -> tuple[re.Pattern, dict[str, tuple[str, str]]]:
    words = ZH_WORDS if lang == "zh" else EN_WORDS
    names = [(w, "colour", v) for v, ws in words["colour"].items() for w in ws]
    names += [(w, "shape", v) for v, ws in words["shape"].items() for w in ws]
    if lang == "en":
        names += [(w, "shape", v) for v, ws in _EN_PLURAL.items() for w in ws]
    names.sort(key=lambda n: -len(n[0]))  # longest first: the alternation takes the first that matches
    groups = "|".join(re.escape(w) for w, _, _ in names)
    return re.compile(rf"\b(?:{groups})\b" if lang == "en" else f"(?:{groups})"), {w: (a, v) for w, a, v in names}


_PATTERNS = {lang: _pattern(lang) for lang in ("en", "zh")}


def object_spans(scene: Scene, text: str, lang: str) -> list[tuple[int, int, int]]:
    """``(start, end, objects)`` for each colour and shape word of ``text`` (a caption of ``scene`` in ``lang``) that
    names objects of the scene; ``objects`` has bit k set for ``scene.shapes[k]``."""
    pattern, meaning = _PATTERNS[lang]
    words = [(m.start(), m.end(), *meaning[m.group(0)]) for m in pattern.finditer(text)]
    spans = []
    i = 0
    while i < len(words):
        start, end, attribute, value = words[i]
        if attribute == "colour" and i + 1 < len(words) and words[i + 1][2] == "shape":
            shape = words[i + 1]
            bits = _objects(scene, colour=value, shape=shape[3])
            if bits:  # else a colour that is not an object's ("黑色背景上有一个三角"): each word alone
                spans += [(start, end, bits), (shape[0], shape[1], bits)]
                i += 2
                continue
        bits = _objects(scene, **{attribute: value})
        if bits:
            spans.append((start, end, bits))
        i += 1
    return spans


def _objects(scene: Scene, colour: str | None = None, shape: str | None = None) -> int:
    bits = 0
    for k, s in enumerate(scene.shapes):
        if (colour is None or s.colour == colour) and (shape is None or s.shape == shape):
            bits |= 1 << k
    return bits
