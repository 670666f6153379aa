"""Synthetic bilingual "shapes" dataset: flat coloured shapes on plain backgrounds, captioned in English and Chinese.

A :class:`Scene` holds one or two shapes (shape × colour × size × position on a 3×3 grid) and a background. Scenes
render deterministically (analytic anti-aliasing, any size) and are captioned from many templates per language
with synonyms, optional attributes left out at random.

Held-out design (for measuring generalisation, never seen in training):

* combinations — for each (colour, shape) pair, three (size, position) combinations are held out: one per size, in
  one grid column, all three rows (36 of the 324 quadruples; every position is held out for 4 pairs). Training
  scenes never contain a held-out quadruple (in either of their shapes); held-out scenes are single-shape and
  always use one. Every (colour, shape) pair, size, position and background still occurs in training.
* wordings — each language has held-out templates that training captions never use. They only recombine words
  (English) / characters (Chinese) that training captions contain, so a tokenizer trained on training captions
  covers them; a held-out caption never equals any training caption.

``Scene.split`` records the split a scene was sampled for; :func:`caption` uses that split's templates unless told
otherwise, so captions of held-out scenes use held-out wordings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "SHAPES",
    "COLOURS",
    "SIZES",
    "POSITIONS",
    "BACKGROUNDS",
    "COLOUR_RGB",
    "BACKGROUND_RGB",
    "SPLITS",
    "LANGS",
    "HELDOUT_COMBOS",
    "HELDOUT_COMBO_LIST",
    "TEMPLATES",
    "Shape",
    "Scene",
    "is_heldout_combo",
    "place_shape",
    "sample_scene",
    "render",
    "render_array",
    "caption",
    "caption_with_template",
    "sample_example",
    "batch",
    "write_imagefolder",
    "CONTROLS",
]

# ---------------------------------------------------------------------------------------------------------------
# attributes

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
SIZES = ("small", "medium", "large")
POSITIONS = (
    "top-left", "top", "top-right",
    "left", "center", "right",
    "bottom-left", "bottom", "bottom-right",
)  # row-major 3×3 grid
BACKGROUNDS = ("white", "gray", "black", "beige")
SPLITS = ("train", "heldout")
LANGS = ("en", "zh")
CONTROLS = ("canny",)  # control maps `write_imagefolder` can add (for ControlNet training)

# Saturated shape colours far (in hue) from each other; achromatic / nearly achromatic backgrounds far from all.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (245, 205, 30),
}
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "gray": (150, 150, 150),
    "black": (0, 0, 0),
    "beige": (235, 222, 195),
}

# Half-extent of a shape as a fraction of the image side, by size; grid cell centres; position jitter.
SIZE_FRACTION = {"small": 0.09, "medium": 0.14, "large": 0.19}
GRID = (0.25, 0.5, 0.75)
JITTER = 0.03
SQUARE_HALF = 0.9  # square half-side / size fraction
TRIANGLE_HALF_WIDTH = 1.1  # equilateral triangle (pointing up) half-width / size fraction
TWO_SHAPE_PROBABILITY = 0.3
_GAP = 0.03  # minimum gap between the boxes of two shapes of a scene (fraction of the side)


def _heldout_combos() -> frozenset[tuple[str, str, str, str]]:
    out = set()
    for q, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        for j, size in enumerate(SIZES):
            # column q % 3, row j + q // 3 (mod 3): one per size, all three rows of one column
            col, row = q % 3, (j + q // 3) % 3
            out.add((colour, shape, size, POSITIONS[row * 3 + col]))
    return frozenset(out)


HELDOUT_COMBOS: frozenset[tuple[str, str, str, str]] = _heldout_combos()


# ---------------------------------------------------------------------------------------------------------------
# scenes


@dataclass(frozen=True)
class Shape:
    """One shape of a scene; ``dx``/``dy`` offset it from its grid cell centre (fractions of the side)."""

    shape: str
    colour: str
    size: str
    position: str
    dx: float = 0.0
    dy: float = 0.0

    def __post_init__(self) -> None:
        for name, allowed in (("shape", SHAPES), ("colour", COLOURS), ("size", SIZES), ("position", POSITIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")

    @property
    def combo(self) -> tuple[str, str, str, str]:
        """(colour, shape, size, position)."""
        return (self.colour, self.shape, self.size, self.position)

    def centre(self) -> tuple[float, float]:
        """Centre (x, y) as fractions of the image side."""
        i = POSITIONS.index(self.position)
        return GRID[i % 3] + self.dx, GRID[i // 3] + self.dy

    def half_extent(self) -> tuple[float, float]:
        """Half width and half height of the shape's box as fractions of the side."""
        s = SIZE_FRACTION[self.size]
        if self.shape == "circle":
            return s, s
        if self.shape == "square":
            return SQUARE_HALF * s, SQUARE_HALF * s
        hw = TRIANGLE_HALF_WIDTH * s
        return hw, hw * math.sqrt(3) / 2


@dataclass(frozen=True)
class Scene:
    """One or two shapes on a plain background; ``split`` is the split it was sampled for (picks caption wordings)."""

    shapes: tuple[Shape, ...]
    background: str = "white"
    split: str = "train"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", tuple(self.shapes))
        if not 1 <= len(self.shapes) <= 2:
            raise ValueError("a scene has one or two shapes")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {', '.join(BACKGROUNDS)}, not {self.background!r}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {self.split!r}")

    def to_dict(self) -> dict:
        """JSON-serialisable form (``from_dict`` reads it back)."""
        return {
            "shapes": [asdict(s) for s in self.shapes],
            "background": self.background,
            "split": self.split,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        """The scene of a ``to_dict`` dict (or its JSON string)."""
        if isinstance(d, str):
            d = json.loads(d)
        return cls(
            shapes=tuple(Shape(**s) for s in d["shapes"]),
            background=d.get("background", "white"),
            split=d.get("split", "train"),
        )


def is_heldout_combo(shape: Shape) -> bool:
    """Whether ``shape``'s (colour, shape, size, position) is one of the held-out combinations."""
    return shape.combo in HELDOUT_COMBOS


_TRAIN_COMBOS = tuple(
    combo
    for combo in ((c, s, z, p) for c in COLOURS for s in SHAPES for z in SIZES for p in POSITIONS)
    if combo not in HELDOUT_COMBOS
)
HELDOUT_COMBO_LIST: tuple[tuple[str, str, str, str], ...] = tuple(sorted(HELDOUT_COMBOS))


def place_shape(rng: np.random.Generator, combo: tuple[str, str, str, str]) -> Shape:
    """A shape of ``combo`` = (colour, shape, size, position), randomly offset within its cell, inside the image."""
    base = Shape(shape=combo[1], colour=combo[0], size=combo[2], position=combo[3])
    cx, cy = base.centre()
    hw, hh = base.half_extent()
    lo_x, hi_x = max(-JITTER, 0.01 + hw - cx), min(JITTER, 0.99 - hw - cx)
    lo_y, hi_y = max(-JITTER, 0.01 + hh - cy), min(JITTER, 0.99 - hh - cy)
    dx = float(np.round(lo_x + (hi_x - lo_x) * rng.random(), 4))
    dy = float(np.round(lo_y + (hi_y - lo_y) * rng.random(), 4))
    return Shape(shape=base.shape, colour=base.colour, size=base.size, position=base.position, dx=dx, dy=dy)


def _overlap(a: Shape, b: Shape) -> bool:
    (ax, ay), (bx, by) = a.centre(), b.centre()
    (aw, ah), (bw, bh) = a.half_extent(), b.half_extent()
    return abs(ax - bx) < aw + bw + _GAP and abs(ay - by) < ah + bh + _GAP


def sample_scene(rng: np.random.Generator, split: str = "train") -> Scene:
    """A random scene of ``split``: training scenes have 1–2 shapes, held-out scenes one held-out shape."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    if split == "heldout":
        shape = place_shape(rng, HELDOUT_COMBO_LIST[int(rng.integers(len(HELDOUT_COMBO_LIST)))])
        return Scene(shapes=(shape,), background=background, split=split)
    first = place_shape(rng, _TRAIN_COMBOS[int(rng.integers(len(_TRAIN_COMBOS)))])
    shapes = [first]
    if rng.random() < TWO_SHAPE_PROBABILITY:
        for _ in range(20):
            other = place_shape(rng, _TRAIN_COMBOS[int(rng.integers(len(_TRAIN_COMBOS)))])
            if other.position != first.position and not _overlap(first, other):
                shapes.append(other)
                break
    return Scene(shapes=tuple(shapes), background=background, split=split)


# ---------------------------------------------------------------------------------------------------------------
# rendering


def _draw(out: np.ndarray, shape: Shape) -> None:
    """Blend ``shape`` into the float32 H×W×3 image ``out`` in place (coverage = clip(0.5 - signed distance))."""
    size = out.shape[0]
    cxf, cyf = shape.centre()
    hwf, hhf = shape.half_extent()
    cx, cy, hw, hh = cxf * size, cyf * size, hwf * size, hhf * size
    x0, x1 = max(int(math.floor(cx - hw - 1)), 0), min(int(math.ceil(cx + hw + 1)), size)
    y0, y1 = max(int(math.floor(cy - hh - 1)), 0), min(int(math.ceil(cy + hh + 1)), size)
    if x0 >= x1 or y0 >= y1:
        return
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
    if shape.shape == "circle":
        d = np.sqrt(xs * xs + ys * ys) - hw
    elif shape.shape == "square":
        d = np.maximum(np.abs(xs), np.abs(ys)) - hw
    else:  # triangle pointing up: apex (0, -hh), base corners (±hw, hh)
        norm = math.hypot(2 * hh, hw)
        slant = (2 * hh * np.abs(xs) - (ys + hh) * hw) / norm
        d = np.maximum(ys - hh, slant)
    a = np.clip(0.5 - d, 0.0, 1.0)[..., None]
    region = out[y0:y1, x0:x1]
    colour = np.asarray(COLOUR_RGB[shape.colour], dtype=np.float32)
    region += a * (colour - region)


def render_array(scene: Scene, size: int = 128) -> np.ndarray:
    """``scene`` as a uint8 size×size×3 array (what :func:`render` returns as an image)."""
    out = np.empty((size, size, 3), dtype=np.float32)
    out[:] = np.asarray(BACKGROUND_RGB[scene.background], dtype=np.float32)
    for shape in scene.shapes:
        _draw(out, shape)
    return (out + 0.5).astype(np.uint8)


def render(scene: Scene, size: int = 128) -> Image.Image:
    """``scene`` as a deterministic anti-aliased RGB image of ``size``×``size`` pixels."""
    return Image.fromarray(render_array(scene, size), mode="RGB")


# ---------------------------------------------------------------------------------------------------------------
# captions

# Words and their synonyms. English words are single tokens where possible; no word is a substring of a word of
# another attribute value in a way that changes its meaning (the tests map caption words back to attributes).
EN_WORDS = {
    "colour": {c: [c] for c in COLOURS},
    "shape": {"circle": ["circle", "disk"], "square": ["square"], "triangle": ["triangle"]},
    "size": {"small": ["small", "little"], "medium": ["medium", "medium-sized"], "large": ["large", "big"]},
    "position": {
        "top-left": ["in the top left corner", "at the top left", "in the upper left"],
        "top": ["at the top", "near the top"],
        "top-right": ["in the top right corner", "at the top right", "in the upper right"],
        "left": ["on the left", "on the left side"],
        "center": ["in the center", "in the middle"],
        "right": ["on the right", "on the right side"],
        "bottom-left": ["in the bottom left corner", "at the bottom left", "in the lower left"],
        "bottom": ["at the bottom", "near the bottom"],
        "bottom-right": ["in the bottom right corner", "at the bottom right", "in the lower right"],
    },
    "background": {"white": ["white"], "gray": ["gray", "grey"], "black": ["black"], "beige": ["beige"]},
}
ZH_WORDS = {
    "colour": {
        "red": ["红色", "红"],
        "green": ["绿色", "绿"],
        "blue": ["蓝色", "蓝"],
        "yellow": ["黄色", "黄"],
    },
    "shape": {
        "circle": ["圆形", "圆", "圆圈"],
        "square": ["正方形", "方块", "方形"],
        "triangle": ["三角形", "三角"],
    },
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
}

# Slots: {col} colour (any form), {colL} colour (long form, Chinese only: 红色), {shp}, {sz}, {pos}, {bg};
# two-shape templates: {d1}/{d2} noun phrases, {p1}/{p2} positions, {bg}.
TEMPLATES: dict[str, dict[str, list[str]]] = {
    "en": {
        "train": [
            "a {col} {shp}",
            "{col} {shp}",
            "a {sz} {col} {shp}",
            "a {col} {shp} {pos}",
            "a {sz} {col} {shp} {pos}",
            "{col} {shp}, {bg} background",
            "a {col} {shp} on a {bg} background",
            "a {sz} {col} {shp} on a {bg} background",
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
            "a {shp} in {col}",
            "a {sz} {shp} in {col} {pos}",
        ],
        "heldout": [
            "the {shp} is {col}",
            "{bg} background, a {sz} {col} {shp}",
            "an image of one {col} {shp} on a {bg} background",
            "{pos} there is a {sz} {col} {shp}",
            "{col} {shp} {pos}",
            "the {shp} is {sz} and {col}",
            "a simple picture of a {col} {shp} {pos}",
            "one {sz} {col} {shp} on a {bg} background",
        ],
        "pair": [
            "{d1} and {d2}",
            "{d1} and {d2} on a {bg} background",
            "two shapes: {d1} and {d2}",
            "{d1} {p1} and {d2} {p2}",
            "a picture of {d1} {p1} and {d2} {p2}",
            "{d1} {p1}, {d2} {p2}, {bg} background",
        ],
    },
    "zh": {
        "train": [
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
        ],
        "heldout": [
            "{shp}是{colL}的",
            "{bg}背景，{pos}一个{sz}{col}{shp}",
            "这是一个{sz}{col}{shp}",
            "图片{pos}有{colL}的{shp}",
            "{pos}画着一个{col}{shp}",
            "画面里只有一个{colL}的{shp}",
            "一个{colL}的{shp}在{pos}",
            "{bg}背景上画着一个{col}{shp}",
        ],
        "pair": [
            "{d1}和{d2}",
            "{p1}是{d1}，{p2}是{d2}",
            "{bg}背景上有{d1}和{d2}",
            "两个图形：{d1}和{d2}",
            "{p1}有{d1}，{p2}有{d2}",
            "画面中有{d1}和{d2}",
        ],
    },
}
_WORDS = {"en": EN_WORDS, "zh": ZH_WORDS}


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
    with_size = rng.random() < 0.5
    if lang == "en":
        return f"a {slots['sz']} {slots['col']} {slots['shp']}" if with_size else f"a {slots['col']} {slots['shp']}"
    k = int(rng.integers(3))
    if k == 0:
        return "一个" + (slots["sz"] if with_size else "") + slots["col"] + slots["shp"]
    if k == 1:
        return f"一个{slots['colL']}的{slots['shp']}"
    return f"{slots['sz']}{slots['col']}{slots['shp']}" if with_size else f"{slots['col']}{slots['shp']}"


def caption_with_template(
    scene: Scene, lang: str, rng: np.random.Generator, split: str | None = None
) -> tuple[str, str]:
    """(caption, template id such as ``"en/train/3"``) of ``scene`` in ``lang`` with ``split``'s wordings."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(LANGS)}, not {lang!r}")
    split = split or scene.split
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if len(scene.shapes) == 1:
        templates = TEMPLATES[lang][split]
        k = int(rng.integers(len(templates)))
        return templates[k].format(**_slots(scene.shapes[0], scene.background, lang, rng)), f"{lang}/{split}/{k}"
    # two-shape scenes: training wordings only (held-out prompts are single-shape)
    templates = TEMPLATES[lang]["pair"]
    k = int(rng.integers(len(templates)))
    s1 = _slots(scene.shapes[0], scene.background, lang, rng)
    s2 = _slots(scene.shapes[1], scene.background, lang, rng)
    text = templates[k].format(
        d1=_noun_phrase(s1, lang, rng), d2=_noun_phrase(s2, lang, rng), p1=s1["pos"], p2=s2["pos"], bg=s1["bg"]
    )
    return text, f"{lang}/pair/{k}"


def caption(scene: Scene, lang: str, rng: np.random.Generator, split: str | None = None) -> str:
    """A random caption of ``scene`` in ``lang`` ("en"/"zh"), worded from ``split`` (default: ``scene.split``)."""
    return caption_with_template(scene, lang, rng, split)[0]


# ---------------------------------------------------------------------------------------------------------------
# examples, batches, files


def sample_example(
    rng: np.random.Generator, split: str = "train", size: int = 128
) -> tuple[Image.Image, str, str, Scene]:
    """(image, English caption, Chinese caption, scene) of one random scene of ``split``."""
    scene = sample_scene(rng, split)
    return render(scene, size), caption(scene, "en", rng), caption(scene, "zh", rng), scene


def batch(
    rng: np.random.Generator, n: int, split: str = "train", size: int = 128, lang: str = "both"
) -> tuple[np.ndarray, list[str], list[Scene]]:
    """(uint8 n×size×size×3 images, one caption each — random language when ``lang="both"`` —, scenes)."""
    if lang not in (*LANGS, "both"):
        raise ValueError(f"lang must be en, zh or both, not {lang!r}")
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions, scenes = [], []
    for i in range(n):
        scene = sample_scene(rng, split)
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
