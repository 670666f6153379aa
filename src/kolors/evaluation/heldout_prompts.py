"""The committed held-out prompt sets of the shapes model: paired English/Chinese prompts with what they ask.

Two files in ``data/``, each the benchmark it is (regenerated only on purpose, never at test time):

* ``heldout_prompts.jsonl`` — the first model's colour/shape benchmark, frozen: 252 pairs of single-shape scenes
  with a held-out (colour, shape, size, position) combination of its four colours, captioned with the first
  model's held-out wordings. Each row: ``pair_id``, ``lang``, ``prompt``, the scene's ``colour``/``shape``/
  ``size``/``position``/``background``, the attributes the prompt ``states``, its ``template`` id and ``scene``.
* ``composition_prompts.jsonl`` — the composition benchmark (``python -m kolors.evaluation.heldout_prompts``):
  pairs in five categories, each a held-out scene (see :mod:`kolors.data.shapes`) captioned with held-out
  wordings that state what the category asks:

  ========== ===================================================== =========================================
  category   scene and prompt                                       scored (``kolors.evaluation.composition``)
  ========== ===================================================== =========================================
  plain      one shape; colour and shape                           colour, shape
  background one shape; colour, shape and background               colour, shape, background
  position   one shape; colour, shape and position                 colour, shape, position
  count      one to three identical shapes; their number            count
  pair       two objects of two colours, and a relation               binding, relation
  ========== ===================================================== =========================================

  Each row: ``pair_id``, ``lang``, ``category``, ``prompt``, ``template``, ``scene`` and ``expects`` (the
  asked ``colour``/``shape``/``background``/``position``, ``count``, ``objects`` [[colour, shape], …],
  ``relation``). The English and Chinese rows of a pair describe the same scene.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.captions import caption_with_template
from ..data.shapes import LANGS, POSITIONS, RELATIONS, Scene, sample_scene

__all__ = [
    "DATA_FILE",
    "COMPOSITION_FILE",
    "CATEGORY_PAIRS",
    "category_scene",
    "category_expects",
    "load_heldout_prompts",
    "build_composition_prompts",
    "write_composition_prompts",
    "load_composition_prompts",
]

DATA_FILE = Path(__file__).with_name("data") / "heldout_prompts.jsonl"
COMPOSITION_FILE = Path(__file__).with_name("data") / "composition_prompts.jsonl"
# Pairs per category: positions 6 per cell, counts 15 per number, pairs 12 per relation.
CATEGORY_PAIRS = {"plain": 40, "background": 40, "position": 54, "count": 45, "pair": 48}
DEFAULT_SEED = 20261201
_STATES = {"plain": "plain", "background": "bg", "position": "pos", "count": None, "pair": "rel"}


def load_heldout_prompts(path: str | Path | None = None, lang: str | None = None) -> list[dict]:
    """The rows of the first model's held-out prompt file (only ``lang``'s when given)."""
    return _load(path or DATA_FILE, lang)


def load_composition_prompts(path: str | Path | None = None, lang: str | None = None,
                             category: str | None = None) -> list[dict]:
    """The rows of the composition prompt file (only ``lang``'s / ``category``'s when given)."""
    return [r for r in _load(path or COMPOSITION_FILE, lang) if category is None or r["category"] == category]


def _load(path: str | Path, lang: str | None) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if lang is None or r["lang"] == lang]


def category_scene(rng: np.random.Generator, category: str, k: int, split: str = "heldout") -> Scene:
    """The ``k``-th scene of ``category`` in ``split``: positions, counts and relations in turn."""
    if category == "count":
        return sample_scene(rng, split, "count", count=1 + k % 3)
    if category == "pair":
        while True:
            scene = sample_scene(rng, split, "pair")
            a, b = scene.shapes
            if scene.relation == RELATIONS[k % len(RELATIONS)] and a.colour != b.colour:
                return scene
    while True:
        scene = sample_scene(rng, split, "single")
        if category != "position" or scene.shapes[0].position == POSITIONS[k % len(POSITIONS)]:
            return scene


def category_expects(scene: Scene, category: str) -> dict:
    first = scene.shapes[0]
    if category == "count":
        return {"count": scene.count, "colour": first.colour, "shape": first.shape}
    if category == "pair":
        return {"objects": [[s.colour, s.shape] for s in scene.shapes], "relation": scene.relation}
    out = {"colour": first.colour, "shape": first.shape}
    if category == "background":
        out["background"] = scene.background
    if category == "position":
        out["position"] = first.position
    return out


def build_composition_prompts(pairs: dict[str, int] | None = None, seed: int = DEFAULT_SEED) -> list[dict]:
    """Rows (two per pair: en then zh) of the composition benchmark, ``pairs`` per category."""
    rng = np.random.default_rng(seed)
    rows, pair_id = [], 0
    for category, n in (pairs or CATEGORY_PAIRS).items():
        for k in range(n):
            scene = category_scene(rng, category, k)
            for lang in LANGS:
                text, template = caption_with_template(scene, lang, rng, "heldout", states=_STATES[category])
                rows.append({"pair_id": pair_id, "lang": lang, "category": category, "prompt": text,
                             "template": template, "scene": scene.to_dict(),
                             "expects": category_expects(scene, category)})
            pair_id += 1
    return rows


def write_composition_prompts(path: str | Path = COMPOSITION_FILE, seed: int = DEFAULT_SEED) -> Path:
    """Write :func:`build_composition_prompts` rows as JSON lines to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in build_composition_prompts(seed=seed):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


if __name__ == "__main__":
    print(write_composition_prompts())
