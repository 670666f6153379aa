"""Synthetic bilingual "shapes" dataset: flat coloured shapes on plain backgrounds, captioned in English and Chinese.

A :class:`Scene` is one of three kinds, each a category of what a prompt can ask (GenEval's, in miniature):

* ``single`` — one shape (shape × colour × size × position on a 3×3 grid) on a background;
* ``count``  — one to three identical shapes (same colour, shape and size) in different cells;
* ``pair``   — two different objects (each its own colour and shape) in a clear relation: the first is left of,
  right of, above or below the second (its column, or row, differs more than the other).

Scenes render deterministically (analytic anti-aliasing, any size). Captions are in :mod:`kolors.data.captions`,
captioned examples (batches, image folders) in :mod:`kolors.data.examples`.

Held-out design (for measuring generalisation, never seen in training):

* single shapes — for each (colour, shape) pair, three (size, position) combinations are held out: one per size, in
  one grid column, all three rows (every position is held out for 10 (colour, shape) pairs). No training scene
  contains a held-out quadruple in any of its shapes; held-out single and count-one scenes always use one.
* counts — (colour, shape, count) triples for two and three shapes, one in six, held out.
* pairs — (colour, shape) + (colour, shape) object pairs, one in eight (in either order), held out.

Every colour, shape, size, position, background, count and relation still occurs in training; held-out scenes
recombine them. ``Scene.split`` records the split a scene was sampled for; captions use that split's wordings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image

__all__ = [
    "SHAPES",
    "COLOURS",
    "SIZES",
    "POSITIONS",
    "BACKGROUNDS",
    "RELATIONS",
    "KINDS",
    "PAIR_SHAPES",
    "COLOUR_RGB",
    "BACKGROUND_RGB",
    "SPLITS",
    "LANGS",
    "HELDOUT_COMBOS",
    "HELDOUT_COMBO_LIST",
    "Shape",
    "Scene",
    "SceneMix",
    "is_heldout_combo",
    "is_heldout_count",
    "is_heldout_pair",
    "allowed_backgrounds",
    "relation_of",
    "exchange_colours",
    "one_shape",
    "place_shape",
    "sample_scene",
    "render",
    "render_array",
    "CONTROLS",
]

# ---------------------------------------------------------------------------------------------------------------
# attributes

SHAPES = ("circle", "square", "triangle")
# The first four are the colours of the first built-in model; its held-out combinations stay held out.
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black", "pink", "brown")
SIZES = ("small", "medium", "large")
POSITIONS = (
    "top-left", "top", "top-right",
    "left", "center", "right",
    "bottom-left", "bottom", "bottom-right",
)  # row-major 3×3 grid
BACKGROUNDS = ("white", "gray", "black", "beige")
RELATIONS = ("left", "right", "above", "below")  # the first object is left of / right of / above / below the second
KINDS = ("single", "count", "pair")
SPLITS = ("train", "heldout")
LANGS = ("en", "zh")
CONTROLS = ("canny",)  # control maps `write_imagefolder` can add (for ControlNet training)
MAX_COUNT = 3

# Shape colours far from each other in lightness or hue; backgrounds achromatic or nearly so.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (245, 205, 30),
    "purple": (135, 50, 185),
    "orange": (250, 135, 20),
    "white": (255, 255, 255),
    "black": (25, 25, 25),
    "pink": (250, 140, 200),
    "brown": (125, 70, 30),
}
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "gray": (150, 150, 150),
    "black": (0, 0, 0),
    "beige": (235, 222, 195),
}
# Shape colours that would vanish into a background (too little contrast to be seen or read back).
_CLASHES = {("white", "white"), ("white", "beige"), ("black", "black")}

# Half-extent of a shape as a fraction of the image side, by size; grid cell centres; position jitter.
SIZE_FRACTION = {"small": 0.09, "medium": 0.14, "large": 0.19}
GRID = (0.25, 0.5, 0.75)
JITTER = 0.03
SQUARE_HALF = 0.9  # square half-side / size fraction
TRIANGLE_HALF_WIDTH = 1.1  # equilateral triangle (pointing up) half-width / size fraction
_GAP = 0.03  # minimum gap between the boxes of two shapes of a scene (fraction of the side)
# How often each kind of training scene is drawn, and the counts of ``count`` scenes.
KIND_WEIGHTS = {"single": 0.4, "count": 0.25, "pair": 0.35}
COUNT_WEIGHTS = {1: 0.2, 2: 0.4, 3: 0.4}
# Whether a pair scene's two objects share their shape (the keys of ``SceneMix.pairs``).
PAIR_SHAPES = ("same", "different")


def _heldout_combos() -> frozenset[tuple[str, str, str, str]]:
    out = set()
    for q, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        for j, size in enumerate(SIZES):
            # column q % 3, row j + q // 3 (mod 3): one per size, all three rows of one column
            col, row = q % 3, (j + q // 3) % 3
            out.add((colour, shape, size, POSITIONS[row * 3 + col]))
    return frozenset(out)


HELDOUT_COMBOS: frozenset[tuple[str, str, str, str]] = _heldout_combos()
HELDOUT_COMBO_LIST: tuple[tuple[str, str, str, str], ...] = tuple(sorted(HELDOUT_COMBOS))


def is_heldout_count(colour: str, shape: str, count: int) -> bool:
    """Whether ``count`` (2 or 3) shapes of ``colour`` and ``shape`` are a held-out count (one triple in six)."""
    return count >= 2 and (COLOURS.index(colour) + 2 * SHAPES.index(shape) + count) % 6 == 0


def is_heldout_pair(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """Whether objects ``a`` and ``b`` = (colour, shape), in either order, are a held-out pair (one in eight)."""
    ca, cb = COLOURS.index(a[0]), COLOURS.index(b[0])
    return (ca * cb + ca + cb + SHAPES.index(a[1]) + SHAPES.index(b[1])) % 8 == 5


def allowed_backgrounds(colours) -> tuple[str, ...]:
    """The backgrounds on which every colour of ``colours`` stays visible."""
    return tuple(bg for bg in BACKGROUNDS if not any((c, bg) in _CLASHES for c in colours))


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

    @property
    def cell(self) -> tuple[int, int]:
        """(column, row) of the grid cell, 0–2 each."""
        i = POSITIONS.index(self.position)
        return i % 3, i // 3

    def centre(self) -> tuple[float, float]:
        """Centre (x, y) as fractions of the image side."""
        col, row = self.cell
        return GRID[col] + self.dx, GRID[row] + self.dy

    def half_extent(self) -> tuple[float, float]:
        """Half width and half height of the shape's box as fractions of the side."""
        s = SIZE_FRACTION[self.size]
        if self.shape == "circle":
            return s, s
        if self.shape == "square":
            return SQUARE_HALF * s, SQUARE_HALF * s
        hw = TRIANGLE_HALF_WIDTH * s
        return hw, hw * math.sqrt(3) / 2


def relation_of(a: Shape, b: Shape) -> str | None:
    """The clear relation of ``a`` to ``b`` on the grid (left/right/above/below), or None when there is none:
    the cells must differ more along the relation's axis than across it."""
    (ca, ra), (cb, rb) = a.cell, b.cell
    dc, dr = cb - ca, rb - ra
    if abs(dc) > abs(dr):
        return "left" if dc > 0 else "right"
    if abs(dr) > abs(dc):
        return "above" if dr > 0 else "below"
    return None


@dataclass(frozen=True)
class Scene:
    """Shapes on a plain background. ``kind``: single, count (identical shapes) or pair (with ``relation``:
    ``shapes[0]`` is ``relation`` of ``shapes[1]``, None for diagonal cells); ``split`` is the split it was sampled
    for (picks wordings)."""

    shapes: tuple[Shape, ...]
    background: str = "white"
    split: str = "train"
    kind: str = "single"
    relation: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", tuple(self.shapes))
        n = len(self.shapes)
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not 1 <= n <= MAX_COUNT or (self.kind == "single" and n != 1) or (self.kind == "pair" and n != 2):
            raise ValueError(f"a {self.kind} scene cannot have {n} shapes")
        if self.kind == "count" and len({(s.colour, s.shape, s.size) for s in self.shapes}) != 1:
            raise ValueError("the shapes of a count scene are identical but for their positions")
        if self.kind == "pair" and self.relation != relation_of(*self.shapes):
            raise ValueError(f"the relation of this pair's cells is {relation_of(*self.shapes)}, "
                             f"not {self.relation!r}")
        if self.kind != "pair" and self.relation is not None:
            raise ValueError("only pair scenes have a relation")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {', '.join(BACKGROUNDS)}, not {self.background!r}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {self.split!r}")

    @property
    def count(self) -> int:
        return len(self.shapes)

    def to_dict(self) -> dict:
        """JSON-serialisable form (``from_dict`` reads it back)."""
        d = {"shapes": [asdict(s) for s in self.shapes], "background": self.background, "split": self.split,
             "kind": self.kind}
        if self.relation is not None:
            d["relation"] = self.relation
        return d

    @classmethod
    def from_dict(cls, d: dict | str) -> Scene:
        """The scene of a ``to_dict`` dict (or its JSON string). Dicts of the first model's data (no ``kind``) read
        as single scenes and pairs, a pair's relation being its cells' (None when they are diagonal)."""
        if isinstance(d, str):
            d = json.loads(d)
        shapes = tuple(Shape(**s) for s in d["shapes"])
        kind = d.get("kind") or ("single" if len(shapes) == 1 else "pair")
        relation = d.get("relation", relation_of(*shapes) if kind == "pair" else None)
        return cls(shapes=shapes, background=d.get("background", "white"), split=d.get("split", "train"),
                   kind=kind, relation=relation)


def exchange_colours(scene: Scene) -> Scene | None:
    """``scene`` with its two objects' colours exchanged: a caption of it that tells the objects apart (by shape, or
    by where each one is) binds the colours to the wrong objects. None for a scene that is not a pair, or a pair of
    one colour (nothing changes)."""
    if scene.kind != "pair":
        return None
    first, second = scene.shapes
    if first.colour == second.colour:
        return None
    return replace(scene, shapes=(replace(first, colour=second.colour), replace(second, colour=first.colour)))


def one_shape(scene: Scene, keep: int) -> Scene | None:
    """``scene`` with both objects the shape of object ``keep`` (0 or 1), colours and places kept: a caption of it
    names one kind of shape where the image has two ("a red circle and a blue circle" for a red circle and a blue
    square). None for a scene that is not a pair, or a pair of one shape (nothing changes)."""
    if scene.kind != "pair":
        return None
    first, second = scene.shapes
    if first.shape == second.shape:
        return None
    kind = scene.shapes[keep].shape
    return replace(scene, shapes=(replace(first, shape=kind), replace(second, shape=kind)))


def is_heldout_combo(shape: Shape) -> bool:
    """Whether ``shape``'s (colour, shape, size, position) is one of the held-out combinations."""
    return shape.combo in HELDOUT_COMBOS


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


def _choice(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _weighted(rng: np.random.Generator, weights: dict):
    keys = list(weights)
    p = np.asarray([weights[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _fits(shapes: list[Shape], other: Shape) -> bool:
    return all(other.position != s.position and not _overlap(s, other) for s in shapes)


def _single(rng: np.random.Generator, split: str) -> list[Shape]:
    combos = HELDOUT_COMBO_LIST if split == "heldout" else None
    while True:
        if combos is not None:
            return [place_shape(rng, _choice(rng, combos))]
        combo = (_choice(rng, COLOURS), _choice(rng, SHAPES), _choice(rng, SIZES), _choice(rng, POSITIONS))
        if combo not in HELDOUT_COMBOS:
            return [place_shape(rng, combo)]


def _count(rng: np.random.Generator, split: str, count: int) -> list[Shape]:
    if count == 1:
        return _single(rng, split)
    while True:
        colour, shape = _choice(rng, COLOURS), _choice(rng, SHAPES)
        if is_heldout_count(colour, shape, count) != (split == "heldout"):
            continue
        for size in (_choice(rng, SIZES), "small"):
            placed: list[Shape] = []
            for _ in range(40):
                s = place_shape(rng, (colour, shape, size, _choice(rng, POSITIONS)))
                if _fits(placed, s) and (split == "heldout" or not is_heldout_combo(s)):
                    placed.append(s)
                    if len(placed) == count:
                        return placed


def _pair(rng: np.random.Generator, split: str, same_shape: bool | None = None) -> tuple[list[Shape], str]:
    """Two objects in a relation; ``same_shape``: whether they share their shape (None: as drawn, about 30%)."""
    while True:
        a = (_choice(rng, COLOURS), _choice(rng, SHAPES))
        b = (_choice(rng, COLOURS), _choice(rng, SHAPES))
        if a == b or is_heldout_pair(a, b) != (split == "heldout"):
            continue
        if same_shape is not None and (a[1] == b[1]) != same_shape:
            continue
        relation = _choice(rng, RELATIONS)
        for _ in range(40):
            first = place_shape(rng, (*a, _choice(rng, SIZES), _choice(rng, POSITIONS)))
            second = place_shape(rng, (*b, _choice(rng, SIZES), _choice(rng, POSITIONS)))
            if (relation_of(first, second) == relation and _fits([first], second)
                    and (split == "heldout" or not (is_heldout_combo(first) or is_heldout_combo(second)))):
                return [first, second], relation


@dataclass(frozen=True)
class SceneMix:
    """How often training scenes of each kind are drawn: ``kinds`` ({"single": W, "count": W, "pair": W}, default
    ``KIND_WEIGHTS``), a count scene's number of shapes (``counts``, {1: W, 2: W, 3: W}, default ``COUNT_WEIGHTS``)
    and whether a pair scene's two objects share their shape (``pairs``, {"same": W, "different": W}; default: drawn
    like the rest, about 30% the same). Other ``kinds`` or ``counts`` draw as many numbers from the generator, so
    only which kind or number each scene gets changes; ``pairs`` given adds a draw to each pair scene, so the scenes
    after it differ too."""

    kinds: Mapping[str, float] | None = None
    counts: Mapping[int, float] | None = None
    pairs: Mapping[str, float] | None = None


def sample_scene(rng: np.random.Generator, split: str = "train", kind: str | None = None,
                 count: int | None = None, background: str | None = None, mix: SceneMix | None = None) -> Scene:
    """A random scene of ``split`` and ``kind`` (default: drawn by ``mix``, a :class:`SceneMix`; held-out scenes:
    single). ``count`` fixes the number of shapes of a count scene (default: drawn by ``mix``); ``background``
    fixes the background (shapes are drawn again until their colours show on it)."""
    mix = mix or SceneMix()
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if background is not None and background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {', '.join(BACKGROUNDS)}, not {background!r}")
    if kind is None:
        kind = "single" if split == "heldout" else _weighted(rng, mix.kinds or KIND_WEIGHTS)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    while True:
        relation = None
        if kind == "single":
            shapes = _single(rng, split)
        elif kind == "count":
            shapes = _count(rng, split, count or _weighted(rng, mix.counts or COUNT_WEIGHTS))
        else:
            same = None if mix.pairs is None else _weighted(rng, mix.pairs) == "same"
            shapes, relation = _pair(rng, split, same)
        allowed = allowed_backgrounds({s.colour for s in shapes})
        if background is None or background in allowed:
            break
    chosen = _choice(rng, allowed) if background is None else background
    return Scene(shapes=tuple(shapes), background=chosen, split=split, kind=kind, relation=relation)


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
