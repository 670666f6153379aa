"""Scores of generated images against what a composition prompt asks, and per-category reports with intervals.

Metrics (each a yes/no per image; a row is scored on the metrics its ``expects`` allows):

* ``colour`` / ``shape`` — the dominant (largest) shape has the asked colour / shape (single-shape prompts);
* ``background`` — the image's background is the asked one;
* ``position`` — the dominant shape sits in the asked cell of the 3×3 grid;
* ``single`` — a prompt for one object (these three categories) draws one shape, not two or more;
* ``count`` — exactly the asked number of shapes (:func:`shapes_checker.count_shapes`);
* ``binding`` — both asked objects are there, each with its own colour and shape, in different shapes;
* ``relation`` — binding, and the first object is left of / right of / above / below the second.

A report gives each metric per language as a rate with its 95% Wilson interval (images of one prompt at several
seeds are counted as separate trials).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from . import shapes_checker as C

__all__ = ["METRICS", "score", "wilson", "summarise"]

METRICS = ("colour", "shape", "background", "position", "single", "count", "binding", "relation")


def score(image: C.ImageLike, expects: Mapping) -> dict[str, bool]:
    """The metrics that ``expects`` (a prompt row's ``expects``) asks for, judged on ``image``."""
    detections = C.detect_shapes(image, max_shapes=8)
    out: dict[str, bool] = {}
    if "objects" in expects:
        objects = [tuple(o) for o in expects["objects"]]
        found = C.find_objects(detections, objects)
        out["binding"] = found is not None
        if expects.get("relation"):
            out["relation"] = found is not None and C.relation_holds(found[0], found[1], expects["relation"])
        return out
    if "count" in expects:
        out["count"] = C.count_shapes(image, detections) == expects["count"]
        return out
    top = detections[0] if detections else C.Detection()
    out["colour"] = top.colour == expects["colour"]
    out["shape"] = top.shape == expects["shape"]
    if "background" in expects:
        out["background"] = C.read_background(image) == expects["background"]
    if "position" in expects:
        out["position"] = top.position == expects["position"]
    out["single"] = C.count_shapes(image, detections) == 1
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials (95% for z = 1.96)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(records: Iterable[Mapping]) -> dict:
    """``{metric: {lang: {"n", "k", "rate", "ci"}}}`` over records with ``lang`` and ``scores`` (from :func:`score`)."""
    counts: dict[str, dict[str, list[int]]] = {}
    for r in records:
        for metric, ok in r["scores"].items():
            k_n = counts.setdefault(metric, {}).setdefault(r["lang"], [0, 0])
            k_n[0] += bool(ok)
            k_n[1] += 1
    report = {}
    for metric in METRICS:
        if metric in counts:
            report[metric] = {lang: {"n": n, "k": k, "rate": k / n, "ci": wilson(k, n)}
                              for lang, (k, n) in sorted(counts[metric].items())}
    return report
