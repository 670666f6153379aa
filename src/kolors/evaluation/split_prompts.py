"""Two-object prompts from both sides of the held-out split: does a model miss binding because it has not fitted
its training data, or because it does not generalise to what it never saw?

Four categories of the same size, each an English/Chinese pair per scene, scored like the composition set's
``pair`` category (binding, relation):

============ ========================================== ============================================
category     the two objects' (colour, shape) pair       the wording
============ ========================================== ============================================
train        a training pair                             a training template
wordings     a training pair (the scenes of ``train``)   a held-out template
combos       a held-out pair                             a training template
heldout      a held-out pair (the scenes of ``combos``)  a held-out template (as the composition set)
============ ========================================== ============================================

Built from a seed when asked (``python -m kolors.evaluation.shapes_eval --prompts pair-splits --category train``),
not committed: the training side is whatever :mod:`kolors.data` trains on.
"""

from __future__ import annotations

import numpy as np

from ..data.captions import caption_with_template
from ..data.shapes import LANGS, SPLITS
from .heldout_prompts import DEFAULT_SEED, category_expects, category_scene

__all__ = ["SPLIT_CATEGORIES", "SPLIT_PAIRS", "build_split_prompts"]

# category: (split of the scenes, split of the wordings)
SPLIT_CATEGORIES = {"train": ("train", "train"), "wordings": ("train", "heldout"),
                    "combos": ("heldout", "train"), "heldout": ("heldout", "heldout")}
SPLIT_PAIRS = 24  # scenes per category, 6 per relation


def build_split_prompts(pairs: int = SPLIT_PAIRS, seed: int = DEFAULT_SEED) -> list[dict]:
    """Rows (en then zh per scene) of the four categories; a category's scenes depend only on its scene split."""
    rows, pair_id = [], 0
    for category, (scenes_from, words_from) in SPLIT_CATEGORIES.items():
        scene_rng = np.random.default_rng([seed, SPLITS.index(scenes_from)])
        word_rng = np.random.default_rng([seed, len(SPLITS) + SPLITS.index(words_from)])
        for k in range(pairs):
            scene = category_scene(scene_rng, "pair", k, split=scenes_from)
            for lang in LANGS:
                text, template = caption_with_template(scene, lang, word_rng, words_from, states="rel")
                rows.append({"pair_id": pair_id, "lang": lang, "category": category, "prompt": text,
                             "template": template, "scene": scene.to_dict(),
                             "expects": category_expects(scene, "pair")})
            pair_id += 1
    return rows
