"""Captioned examples of the shapes dataset: batches in memory and Hugging Face image folders on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from .captions import caption
from .shapes import CONTROLS, LANGS, Scene, SceneMix, render, render_array, sample_scene

__all__ = ["sample_example", "batch", "write_imagefolder"]


def sample_example(
    rng: np.random.Generator, split: str = "train", size: int = 128
) -> tuple[Image.Image, str, str, Scene]:
    """(image, English caption, Chinese caption, scene) of one random scene of ``split``."""
    scene = sample_scene(rng, split)
    return render(scene, size), caption(scene, "en", rng), caption(scene, "zh", rng), scene


def batch(
    rng: np.random.Generator, n: int, split: str = "train", size: int = 128, lang: str = "both",
    mix: SceneMix | None = None,
) -> tuple[np.ndarray, list[str], list[Scene]]:
    """(uint8 n×size×size×3 images, one caption each — random language when ``lang="both"`` —, scenes), the scenes
    drawn by ``mix`` (:class:`SceneMix`; default: the dataset's own)."""
    if lang not in (*LANGS, "both"):
        raise ValueError(f"lang must be en, zh or both, not {lang!r}")
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions, scenes = [], []
    for i in range(n):
        scene = sample_scene(rng, split, mix=mix)
        images[i] = render_array(scene, size)
        lg = lang if lang != "both" else LANGS[int(rng.integers(len(LANGS)))]
        captions.append(caption(scene, lg, rng))
        scenes.append(scene)
    return images, captions, scenes


def write_imagefolder(
    out_dir: str | Path, n: int, seed: int, split: str = "train", size: int = 128, lang: str = "both",
    control: str | None = None,
) -> Path:
    """Write ``n`` examples as a Hugging Face imagefolder (``images/*.png`` + ``metadata.jsonl``); returns ``out_dir``.

    One row per image. ``text`` is the caption in ``lang``; with ``lang="both"`` each row's language is drawn at
    random (recorded in ``lang``). Every row also has ``text_en``, ``text_zh`` and ``scene`` (a JSON string).
    ``control="canny"`` also writes each render's control map to ``conditioning/`` (canny edges, made exactly as
    ``kolors generate --control canny=IMAGE`` makes them) and names it in a ``conditioning_image`` column: the
    layout ControlNet training reads. The scenes and captions do not depend on ``control``.
    """
    if lang not in (*LANGS, "both"):
        raise ValueError(f"lang must be en, zh or both, not {lang!r}")
    if control not in (None, *CONTROLS):
        raise ValueError(f"control must be one of {', '.join(CONTROLS)}, not {control!r}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    if control is not None:
        from ..annotators.maps import control_map

        (out / "conditioning").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    width = max(6, len(str(max(n - 1, 0))))
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            scene = sample_scene(rng, split)
            name = f"images/{i:0{width}d}.png"
            image = render(scene, size)
            image.save(out / name, optimize=False)
            texts = {lg: caption(scene, lg, rng) for lg in LANGS}
            lg = lang if lang != "both" else LANGS[int(rng.integers(len(LANGS)))]
            row = {
                "file_name": name,
                "text": texts[lg],
                "lang": lg,
                "text_en": texts["en"],
                "text_zh": texts["zh"],
                "scene": json.dumps(scene.to_dict(), ensure_ascii=False),
            }
            if control is not None:
                row["conditioning_image"] = f"conditioning/{i:0{width}d}.png"
                control_map(control, image).save(out / row["conditioning_image"], optimize=False)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out
