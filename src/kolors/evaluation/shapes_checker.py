"""Automatic checker for images of the shapes dataset: background, and each shape's colour, shape and position
(numpy + PIL only).

Method, per image:

1. background = a quadratic surface per channel fitted robustly to a thin border ring (follows gradients and
   vignetting); foreground = pixels far (in RGB) from it, the threshold raised above the border's own noise; the
   background's name = the reference nearest (CIELAB) to the ring's median colour;
2. 8-connected components of the foreground; specks below a minimum area are ignored, the largest remain;
3. per component: its colour is the median of its interior (eroded) pixels; the component is re-segmented at half
   way between background and that colour (so blur does not change its area) with holes filled;
4. colour = white / black / none (grey) when the colour is nearly achromatic, else the nearest chromatic reference
   in CIELAB; shape = nearest prototype in two rotation-invariant features: area / minimum-area bounding rectangle
   (circle π/4, square 1, triangle 1/2) and area / circle through the farthest hull point (circle 1, square 2/π,
   triangle ≈ 0.41); position = nearest cell centre of the 3×3 grid;
5. count = coloured shapes of at least 0.4 × the smallest shape's area; two objects = both asked (colour, shape)
   found in different shapes; relation = the first's centre a tenth of the side or more left of / right of /
   above / below the second's.

Works at any resolution (the model's native 128 px included) and tolerates blur, noise and colour shifts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..data.shapes import (
    BACKGROUND_RGB,
    COLOUR_RGB,
    GRID,
    POSITIONS,
    SIZE_FRACTION,
    SIZES,
    SQUARE_HALF,
    TRIANGLE_HALF_WIDTH,
    Scene,
)

__all__ = [
    "ImageLike",
    "Detection",
    "detect_shapes",
    "check_image",
    "check",
    "read_background",
    "count_shapes",
    "find_objects",
    "relation_holds",
    "evaluate_images",
]

ImageLike = Image.Image | np.ndarray  # PIL image, uint8 H×W×3 (or C×H×W) array, or float array in 0–1
SceneLike = Scene | Mapping | tuple[str, str]  # a Scene, its dict, {"colour", "shape"}, or (colour, shape)


def _lab(rgb) -> np.ndarray:
    """CIELAB (D65) of sRGB values in 0–255 (any leading shape, last axis 3)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = c @ np.array([[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192], [0.1805, 0.0722, 0.9505]])
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


ACHROMATIC = ("white", "black")
CHROMATIC_LAB = {name: _lab(rgb) for name, rgb in COLOUR_RGB.items() if name not in ACHROMATIC}
BACKGROUND_LAB = {name: _lab(rgb) for name, rgb in BACKGROUND_RGB.items()}

# Shape prototypes in (area / min-area rectangle, area / circumscribed circle), measured on clean renders;
# FEATURE_SCALE weighs the two features' distances.
PROTOTYPES: dict[str, tuple[float, float]] = {
    "circle": (0.785, 0.92),
    "square": (0.98, 0.64),
    "triangle": (0.52, 0.43),
}
FEATURE_SCALE = (1.0, 1.0)
MIN_CHROMA = 40.0  # below this (0–255 max-min channel spread) the colour is achromatic: white, black or grey
WHITE_L, BLACK_L = 80.0, 30.0  # CIELAB lightness above which an achromatic shape is white, below which black
MAX_BACKGROUND_DELTA = 25.0  # CIELAB distance beyond which a border colour is none of the backgrounds
COUNT_AREA = 0.4  # a shape counts when at least this fraction of the smallest rendered shape's area
RELATION_MARGIN = 0.1  # centres must differ by this fraction of the side along a relation's axis
MIN_AREA_FRACTION = 0.002  # components smaller than this fraction of the image are specks
BASE_THRESHOLD = 48.0  # RGB distance from the background that counts as foreground (raised for noisy borders)

# Area of a shape in units of (size fraction × side)², by shape (for the size estimate).
_AREA_FACTOR = {
    "circle": math.pi,
    "square": (2 * SQUARE_HALF) ** 2,
    "triangle": 2 * TRIANGLE_HALF_WIDTH * TRIANGLE_HALF_WIDTH * math.sqrt(3) / 2,
}


@dataclass
class Detection:
    """What the checker sees of one shape; fields are ``None`` when nothing (or nothing decidable) was found."""

    colour: str | None = None
    shape: str | None = None
    size: str | None = None
    position: str | None = None
    area: float = 0.0  # fraction of the image
    centre: tuple[float, float] | None = None  # (x, y) as fractions of width / height
    bbox: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in pixels (exclusive end)
    rgb: tuple[int, int, int] | None = None  # median colour of the shape's interior
    background: tuple[int, int, int] | None = None
    features: dict[str, float] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        """Whether a shape was found at all."""
        return self.area > 0


# ---------------------------------------------------------------------------------------------------------------
# image plumbing


def _as_array(image: ImageLike) -> np.ndarray:
    """float32 H×W×3 in 0–255 from a PIL image, a uint8 array or a float array in 0–1."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # C×H×W
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    arr = arr[..., :3]
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32)
        if arr.max(initial=0.0) <= 1.0:
            arr = arr * 255.0
        return arr
    return arr.astype(np.float32)


def _shift_reduce(mask: np.ndarray, op, radius: int = 1) -> np.ndarray:
    """3×3 (per step) binary dilation (op=np.logical_or) or erosion (np.logical_and), ``radius`` steps."""
    out = mask
    fill = op is np.logical_and
    for _ in range(radius):
        p = np.pad(out, 1, constant_values=fill)
        acc = out.copy()
        h, w = out.shape
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                if dy == 1 and dx == 1:
                    continue
                acc = op(acc, p[dy : dy + h, dx : dx + w])
        out = acc
    return out


def _label(mask: np.ndarray) -> np.ndarray:
    """8-connected component labels of ``mask``: each pixel gets the smallest flat index of its component, -1 off."""
    h, w = mask.shape
    big = h * w
    lab = np.where(mask, np.arange(big, dtype=np.int64).reshape(h, w), big)
    while True:
        p = np.pad(lab, 1, constant_values=big)
        m = lab.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                if dy != 1 or dx != 1:
                    np.minimum(m, p[dy : dy + h, dx : dx + w], out=m)
        m = np.where(mask, m, big)
        # pointer jumping: follow labels to their own labels until fixed
        flat = np.append(m.ravel(), big)
        for _ in range(32):
            nxt = flat[flat]
            if np.array_equal(nxt, flat):
                break
            flat = nxt
        m = flat[:-1].reshape(h, w)
        if np.array_equal(m, lab):
            break
        lab = m
    return np.where(mask, lab, -1)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with background regions not connected to its border filled."""
    p = np.pad(~mask, 1, constant_values=True)
    lab = _label(p)
    outside = lab == lab[0, 0]
    return ~outside[1:-1, 1:-1]


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (counter-clockwise, Andrew's monotone chain) of unique 2-D ``points``."""
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) <= 2:
        return np.asarray(pts, dtype=np.float64)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.asarray(lower[:-1] + upper[:-1], dtype=np.float64)


def _shape_features(mask: np.ndarray) -> dict[str, float]:
    """Rotation-invariant shape features of a binary mask (pixel squares, not centres, define its outline)."""
    ys, xs = np.nonzero(mask)
    area = float(len(xs))
    rows = np.unique(ys)
    # the hull only depends on each row's extreme pixels: their outer corners
    xmin = np.full(mask.shape[0], mask.shape[1], dtype=np.int64)
    xmax = np.full(mask.shape[0], -1, dtype=np.int64)
    np.minimum.at(xmin, ys, xs)
    np.maximum.at(xmax, ys, xs)
    xl, xr = xmin[rows], xmax[rows] + 1
    pts = np.concatenate(
        [np.stack([xl, rows], 1), np.stack([xl, rows + 1], 1), np.stack([xr, rows], 1), np.stack([xr, rows + 1], 1)]
    )
    hull = _hull(pts)
    if len(hull) < 3:
        return {"fill_rect": 1.0, "fill_circle": 0.0, "aspect": 1.0}
    edges = np.roll(hull, -1, axis=0) - hull
    theta = np.arctan2(edges[:, 1], edges[:, 0])
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
    u = c * hull[None, :, 0] + s * hull[None, :, 1]
    v = -s * hull[None, :, 0] + c * hull[None, :, 1]
    du, dv = u.max(1) - u.min(1), v.max(1) - v.min(1)
    k = int(np.argmin(du * dv))
    rect = float(du[k] * dv[k])
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    r2 = float(((hull[:, 0] - cx) ** 2 + (hull[:, 1] - cy) ** 2).max())
    return {
        "fill_rect": area / rect if rect > 0 else 1.0,
        "fill_circle": area / (math.pi * r2) if r2 > 0 else 0.0,
        "aspect": float(max(du[k], dv[k]) / max(min(du[k], dv[k]), 1e-6)),
    }


def _classify_shape(features: Mapping[str, float]) -> str:
    f = (features["fill_rect"], features["fill_circle"])
    best, dist = "circle", float("inf")
    for name, proto in PROTOTYPES.items():
        d = sum(((a - b) / w) ** 2 for a, b, w in zip(f, proto, FEATURE_SCALE))
        if d < dist:
            best, dist = name, d
    return best


def _classify_colour(rgb: np.ndarray) -> str | None:
    r, g, b = (float(v) for v in rgb)
    lab = _lab((r, g, b))
    if max(r, g, b) - min(r, g, b) < MIN_CHROMA:
        return "white" if lab[0] >= WHITE_L else "black" if lab[0] <= BLACK_L else None
    return min(CHROMATIC_LAB, key=lambda n: float(np.sum((lab - CHROMATIC_LAB[n]) ** 2)))


def _position(cx: float, cy: float) -> str:
    col = int(np.argmin([abs(cx - g) for g in GRID]))
    row = int(np.argmin([abs(cy - g) for g in GRID]))
    return POSITIONS[row * 3 + col]


def _size(area_fraction: float, shape: str | None) -> str:
    s = math.sqrt(area_fraction / _AREA_FACTOR[shape or "circle"])
    return min(SIZES, key=lambda z: abs(math.log(s / SIZE_FRACTION[z])))


# ---------------------------------------------------------------------------------------------------------------
# detection


def _describe(arr: np.ndarray, comp: np.ndarray, bgmap: np.ndarray, threshold: float) -> Detection | None:
    h, w = comp.shape
    core = _shift_reduce(comp, np.logical_and, 1)
    if core.sum() < 0.3 * comp.sum():
        core = comp
    fg = np.median(arr[core], axis=0)
    bg = np.median(bgmap[core], axis=0)
    v = fg - bg
    vv = float(v @ v)
    if vv < threshold**2:
        return None
    # window around the component (plus a margin) for the half-way re-segmentation
    ys, xs = np.nonzero(comp)
    m = 3
    y0, y1 = max(ys.min() - m, 0), min(ys.max() + m + 1, h)
    x0, x1 = max(xs.min() - m, 0), min(xs.max() + m + 1, w)
    win = arr[y0:y1, x0:x1]
    t = ((win - bgmap[y0:y1, x0:x1]) @ v) / vv
    region = _shift_reduce(comp[y0:y1, x0:x1], np.logical_or, 2)
    mask = _fill_holes(region & (t > 0.5))
    if not mask.any():
        return None
    lab = _label(mask)
    ids, counts = np.unique(lab[lab >= 0], return_counts=True)
    mask = lab == ids[np.argmax(counts)]
    feats = _shape_features(mask)
    shape = _classify_shape(feats)
    yy, xx = np.nonzero(mask)
    area = len(xx) / (h * w)
    cx, cy = (xx.mean() + x0 + 0.5) / w, (yy.mean() + y0 + 0.5) / h
    return Detection(
        colour=_classify_colour(fg),
        shape=shape,
        size=_size(area, shape),
        position=_position(cx, cy),
        area=area,
        centre=(float(cx), float(cy)),
        bbox=(int(xx.min() + x0), int(yy.min() + y0), int(xx.max() + x0 + 1), int(yy.max() + y0 + 1)),
        rgb=tuple(int(round(c)) for c in fg),
        background=tuple(int(round(c)) for c in bg),
        features={k: round(val, 4) for k, val in feats.items()},
    )


def _poly(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Quadratic surface terms (1, x, y, x², y², xy) stacked on a last axis."""
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1)


def _ring_mask(h: int, w: int) -> np.ndarray:
    """A border ring about 1/64 of the side wide: where the background is read."""
    b = max(1, round(min(h, w) / 64))
    ring = np.zeros((h, w), dtype=bool)
    ring[:b] = ring[-b:] = True
    ring[:, :b] = ring[:, -b:] = True
    return ring


def _background(arr: np.ndarray) -> tuple[np.ndarray, float]:
    """(H×W×3 background estimate, its noise level): a quadratic per channel fitted robustly to a border ring.

    The surface follows gradients and vignetting (a ring determines every quadratic term). The fit starts from the
    ring pixels near the ring's median colour and is refitted without pixels far from the previous fit, which keeps
    shapes that touch the border out of it. The noise level is the median distance of the kept ring pixels from the
    surface (≈ 1.5 σ for Gaussian pixel noise).
    """
    h, w = arr.shape[:2]
    ys, xs = np.nonzero(_ring_mask(h, w))
    design = _poly(xs / w - 0.5, ys / h - 0.5)
    values = arr[ys, xs].astype(np.float64)
    # start from the ring's median colour (robust while up to half the ring is a shape), then fit the surface
    resid = np.linalg.norm(values - np.median(values, axis=0), axis=1)
    keep = resid <= max(3.0 * float(np.median(resid)), 24.0)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
        resid = np.linalg.norm(values - design @ coef, axis=1)
        noise = float(np.median(resid[keep]))
        keep = resid <= max(3.0 * noise, 12.0)
    yy, xx = np.mgrid[0:h, 0:w]
    return (_poly(xx / w - 0.5, yy / h - 0.5) @ coef).astype(np.float32), noise


def detect_shapes(image: ImageLike, max_shapes: int = 2) -> list[Detection]:
    """Up to ``max_shapes`` shapes found in ``image`` (PIL image or H×W×3 array), largest first."""
    arr = _as_array(image)
    h, w = arr.shape[:2]
    bgmap, noise = _background(arr)
    threshold = max(BASE_THRESHOLD, 3.0 * noise)
    dist = np.linalg.norm(arr - bgmap, axis=2)
    fg = dist > threshold
    if not fg.any():
        return []
    lab = _label(fg)
    ids, counts = np.unique(lab[lab >= 0], return_counts=True)
    min_area = max(6, MIN_AREA_FRACTION * h * w)
    order = np.argsort(-counts, kind="stable")
    out: list[Detection] = []
    for i in order:
        if counts[i] < min_area or len(out) >= max_shapes:
            break
        det = _describe(arr, lab == ids[i], bgmap, threshold)
        if det is not None:
            out.append(det)
    return out


def check_image(image: ImageLike) -> Detection:
    """The dominant (largest) shape of ``image``; an empty :class:`Detection` (all ``None``) when there is none."""
    found = detect_shapes(image, max_shapes=1)
    return found[0] if found else Detection()


def _expected(scene: SceneLike) -> list[tuple[str, str]]:
    if isinstance(scene, Scene):
        return [(s.colour, s.shape) for s in scene.shapes]
    if isinstance(scene, Mapping) and "shapes" in scene:
        return [(s["colour"], s["shape"]) for s in scene["shapes"]]
    if isinstance(scene, Mapping):
        return [(scene["colour"], scene["shape"])]
    colour, shape = scene
    return [(colour, shape)]


def _multiset_covered(wanted: list[str | None], have: list[str | None]) -> bool:
    pool = list(have)
    for x in wanted:
        if x not in pool:
            return False
        pool.remove(x)
    return True


def check(image: ImageLike, scene: SceneLike) -> tuple[bool, bool]:
    """(colour right, shape right) of ``image`` against ``scene`` (a Scene, its dict, or a (colour, shape) pair).

    One-shape scenes are judged by the dominant shape; two-shape scenes by whether the expected colours (and,
    separately, shapes) are all among the detected shapes.
    """
    expected = _expected(scene)
    if len(expected) == 1:
        det = check_image(image)
        return det.colour == expected[0][0], det.shape == expected[0][1]
    dets = detect_shapes(image, max_shapes=len(expected) + 2)
    return (
        _multiset_covered([c for c, _ in expected], [d.colour for d in dets]),
        _multiset_covered([s for _, s in expected], [d.shape for d in dets]),
    )


def read_background(image: ImageLike) -> str | None:
    """The background's name: the reference nearest (CIELAB) to the border's median colour, None when that is
    farther than ``MAX_BACKGROUND_DELTA`` from every reference."""
    arr = _as_array(image)
    lab = _lab(np.median(arr[_ring_mask(*arr.shape[:2])], axis=0))
    name = min(BACKGROUND_LAB, key=lambda n: float(np.sum((lab - BACKGROUND_LAB[n]) ** 2)))
    return name if float(np.sqrt(np.sum((lab - BACKGROUND_LAB[name]) ** 2))) <= MAX_BACKGROUND_DELTA else None


_SMALLEST_AREA = min(_AREA_FACTOR.values()) * SIZE_FRACTION["small"] ** 2  # fraction of the image


def count_shapes(image: ImageLike, detections: list[Detection] | None = None) -> int:
    """How many shapes ``image`` shows: components of at least ``COUNT_AREA`` × the smallest shape's area with a
    colour (a grey halo or smudge is no shape)."""
    found = detect_shapes(image, max_shapes=8) if detections is None else detections
    return sum(d.area >= COUNT_AREA * _SMALLEST_AREA and d.colour is not None for d in found)


def find_objects(detections: list[Detection], wanted: list[tuple[str | None, str]]) -> list[Detection] | None:
    """Distinct detections matching each (colour, shape) of ``wanted`` in order (colour None: any), largest
    first; None when some object has no match."""
    chosen: list[Detection] = []
    for colour, shape in wanted:
        match = next((d for d in detections if d not in chosen and d.shape == shape
                      and (colour is None or d.colour == colour)), None)
        if match is None:
            return None
        chosen.append(match)
    return chosen


def relation_holds(a: Detection, b: Detection, relation: str) -> bool:
    """Whether ``a``'s centre is ``relation`` (left/right/above/below) of ``b``'s by ``RELATION_MARGIN`` or more."""
    (ax, ay), (bx, by) = a.centre, b.centre
    gap = {"left": bx - ax, "right": ax - bx, "above": by - ay, "below": ay - by}[relation]
    return gap >= RELATION_MARGIN


# ---------------------------------------------------------------------------------------------------------------
# reports


def evaluate_images(records: Iterable[Mapping]) -> dict:
    """Per-language colour/shape accuracy and zh/en agreement of generated images against their prompts.

    Each record has ``lang``, the expected ``colour`` and ``shape``, and ``image`` (or a precomputed
    ``detection``); optional ``pair_id`` (and ``seed``) pair an English with a Chinese record for agreement.
    Returns ``{"n", "languages": {lang: {"n", "colour", "shape", "both"}}, "overall": {...},
    "agreement": {"pairs", "colour", "shape", "both_correct"}}``: ``agreement.colour``/``shape`` are the fractions
    of zh/en pairs whose detected colour / shape is the same; ``both_correct`` those where both images are right.
    """
    rows = []
    for r in records:
        det = r.get("detection")
        if det is None:
            det = check_image(r["image"])
        rows.append(
            {
                "lang": r.get("lang", "?"),
                "key": (r.get("pair_id"), r.get("seed")),
                "has_pair": r.get("pair_id") is not None,
                "det": det,
                "colour_ok": det.colour == r["colour"],
                "shape_ok": det.shape == r["shape"],
            }
        )

    def summary(sel: list[dict]) -> dict:
        n = len(sel)
        if n == 0:
            return {"n": 0, "colour": 0.0, "shape": 0.0, "both": 0.0}
        return {
            "n": n,
            "colour": sum(x["colour_ok"] for x in sel) / n,
            "shape": sum(x["shape_ok"] for x in sel) / n,
            "both": sum(x["colour_ok"] and x["shape_ok"] for x in sel) / n,
        }

    langs = sorted({x["lang"] for x in rows})
    report = {
        "n": len(rows),
        "languages": {lg: summary([x for x in rows if x["lang"] == lg]) for lg in langs},
        "overall": summary(rows),
    }
    by_key: dict = {}
    for x in rows:
        if x["has_pair"]:
            by_key.setdefault(x["key"], {})[x["lang"]] = x
    pairs = [v for v in by_key.values() if "en" in v and "zh" in v]
    n = len(pairs)
    report["agreement"] = {
        "pairs": n,
        "colour": sum(p["en"]["det"].colour == p["zh"]["det"].colour for p in pairs) / n if n else 0.0,
        "shape": sum(p["en"]["det"].shape == p["zh"]["det"].shape for p in pairs) / n if n else 0.0,
        "both_correct": sum(
            p["en"]["colour_ok"] and p["en"]["shape_ok"] and p["zh"]["colour_ok"] and p["zh"]["shape_ok"] for p in pairs
        ) / n if n else 0.0,
    }
    return report
