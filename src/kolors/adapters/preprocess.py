"""Control images for the Kolors ControlNets: canny edges, and depth / pose maps.

Canny edges are computed here with OpenCV, as the official scripts do. Depth and pose maps are taken ready-made:
the official scripts make them with annotators (MiDaS for depth, DWPose for pose) whose weights are separate
downloads; kolors does not run those annotators, and says so, naming the file, when asked to.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InvalidParameterError, KolorsError

CANNY_THRESHOLDS = (100, 200)  # the official scripts' low / high hysteresis thresholds
MIDAS_FILE = "dpt_hybrid-midas-501f0c75.pt"
DWPOSE_FILES = ("dw-ll_ucoco_384.onnx", "yolox_l.onnx")
ANNOTATOR_FILES = {"depth": (MIDAS_FILE,), "pose": DWPOSE_FILES}
ANNOTATOR_NAMES = {"depth": "MiDaS depth", "pose": "DWPose"}


def canny(image: Image.Image, low: int = CANNY_THRESHOLDS[0], high: int = CANNY_THRESHOLDS[1]) -> Image.Image:
    """The canny edge map of ``image`` as a 3-channel RGB image of the same size (edges 255, the rest 0).

    Like the official scripts, the edges are found on the RGB pixels themselves (OpenCV takes the strongest
    gradient of the three channels), not on a grey version.
    """
    import cv2

    if not 0 <= low <= high:
        raise InvalidParameterError(f"canny thresholds must satisfy 0 <= low <= high, got {low}/{high}")
    pixels = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    edges = cv2.Canny(pixels, float(low), float(high))
    return Image.fromarray(np.repeat(edges[:, :, None], 3, axis=2))


def annotator_files(kind: str, annotator_dir: str | os.PathLike | None) -> list[Path]:
    """The weight files the ``kind`` ("depth"/"pose") annotator needs, checked to be in ``annotator_dir``."""
    names = ANNOTATOR_FILES[kind]
    ready = f"Control('{kind}', 'my_{kind}_map.png') with detect=False"
    if annotator_dir is None:
        raise KolorsError(
            f"making a {kind} map needs the {ANNOTATOR_NAMES[kind]} annotator weights ({', '.join(names)}): "
            f"pass annotator_dir=DIR holding them, or pass a ready {kind} map instead ({ready})"
        )
    folder = Path(annotator_dir).expanduser()
    for name in names:
        if not (folder / name).is_file():
            raise KolorsError(
                f"the {ANNOTATOR_NAMES[kind]} annotator weight file {name} is not in {folder}: put it there, "
                f"or pass a ready {kind} map instead ({ready})"
            )
    return [folder / name for name in names]


def _run_annotator(kind: str, image: Image.Image, annotator_dir: str | os.PathLike | None) -> Image.Image:
    annotator_files(kind, annotator_dir)
    raise KolorsError(
        f"kolors cannot run the {ANNOTATOR_NAMES[kind]} annotator itself: make the {kind} map with another tool "
        f"(e.g. the official Kolors scripts or controlnet_aux) and pass it as a ready map (detect=False)"
    )


def depth_map(image: Image.Image, *, annotator_dir: str | os.PathLike | None = None) -> Image.Image:
    """A depth map of a photo with MiDaS (needs dpt_hybrid-midas-501f0c75.pt in ``annotator_dir``)."""
    return _run_annotator("depth", image, annotator_dir)


def pose_map(image: Image.Image, *, annotator_dir: str | os.PathLike | None = None) -> Image.Image:
    """A pose skeleton map of a photo with DWPose (needs dw-ll_ucoco_384.onnx and yolox_l.onnx)."""
    return _run_annotator("pose", image, annotator_dir)


def control_map(kind: str, image: Image.Image, *, detect: bool | None = None,
                thresholds: tuple[int, int] = CANNY_THRESHOLDS,
                annotator_dir: str | os.PathLike | None = None) -> Image.Image:
    """The RGB control image for a ControlNet of ``kind`` from ``image``.

    ``detect``: whether ``image`` is a photo to turn into a map (canny edges, depth, pose) rather than a ready map.
    By default canny edges are computed (cheap, no weights) and depth/pose images are taken as ready maps.
    Kinds other than canny/depth/pose always take ``image`` as it is.
    """
    if detect is None:
        detect = kind == "canny"
    if not detect:
        return image.convert("RGB")
    if kind == "canny":
        return canny(image, *thresholds)
    if kind == "depth":
        return depth_map(image, annotator_dir=annotator_dir)
    if kind == "pose":
        return pose_map(image, annotator_dir=annotator_dir)
    raise InvalidParameterError(f"kolors has no detector for '{kind}' control images: pass a ready map (detect=False)")
