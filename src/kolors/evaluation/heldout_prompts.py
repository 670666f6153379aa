"""The committed held-out prompt set of the shapes model: paired English/Chinese prompts with expected attributes.

``data/heldout_prompts.jsonl`` holds one row per (pair, language): ``pair_id``, ``lang``, ``prompt``, the expected
``colour``/``shape``/``size``/``position``/``background``, the wording ``template`` id and the full ``scene``.
Every pair is a single-shape scene with a held-out (colour, shape, size, position) combination, each of the 36
combinations used equally often, captioned with held-out wordings only; the English and Chinese rows of a pair
describe the same scene. The file is the benchmark: it is regenerated only on purpose
(``python -m kolors.evaluation.heldout_prompts``), never at test time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.shapes import BACKGROUNDS, HELDOUT_COMBO_LIST, LANGS, Scene, caption_with_template, place_shape

__all__ = ["DATA_FILE", "build_heldout_prompts", "load_heldout_prompts", "write_heldout_prompts"]

DATA_FILE = Path(__file__).with_name("data") / "heldout_prompts.jsonl"
DEFAULT_PAIRS = 252  # 7 per held-out combination
DEFAULT_SEED = 20240611


def build_heldout_prompts(n_pairs: int = DEFAULT_PAIRS, seed: int = DEFAULT_SEED) -> list[dict]:
    """Rows (two per pair: en then zh) of ``n_pairs`` held-out scenes with held-out wordings."""
    rng = np.random.default_rng(seed)
    rows = []
    for pair_id in range(n_pairs):
        combo = HELDOUT_COMBO_LIST[pair_id % len(HELDOUT_COMBO_LIST)]
        shape = place_shape(rng, combo)
        scene = Scene(shapes=(shape,), background=BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], split="heldout")
        for lang in LANGS:
            text, template = caption_with_template(scene, lang, rng, "heldout")
            rows.append(
                {
                    "pair_id": pair_id,
                    "lang": lang,
                    "prompt": text,
                    "colour": shape.colour,
                    "shape": shape.shape,
                    "size": shape.size,
                    "position": shape.position,
                    "background": scene.background,
                    "template": template,
                    "scene": scene.to_dict(),
                }
            )
    return rows


def write_heldout_prompts(
    path: str | Path = DATA_FILE, n_pairs: int = DEFAULT_PAIRS, seed: int = DEFAULT_SEED
) -> Path:
    """Write :func:`build_heldout_prompts` rows as JSON lines to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in build_heldout_prompts(n_pairs, seed):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def load_heldout_prompts(path: str | Path | None = None, lang: str | None = None) -> list[dict]:
    """The rows of the committed held-out prompt file (only ``lang``'s when given)."""
    with open(path or DATA_FILE, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if lang is None or r["lang"] == lang]


if __name__ == "__main__":
    print(write_heldout_prompts())
