"""Control images for the Kolors ControlNets: canny edges, and depth / pose maps.

Canny edges are computed here with OpenCV, as the official scripts do. Depth and pose maps come ready-made, or are
made from a photo when the user has the annotator's weights locally:

- depth: MiDaS (DPT-Hybrid, as the official scripts use) run through transformers' DPT classes, from the
  transformers layout (``Intel/dpt-hybrid-midas``: ``config.json`` + weights);
- pose: DWPose, its two ONNX files (``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx``) run with onnxruntime
  (``pip install "kolors[annotators]"``) and drawn as an OpenPose map (:mod:`kolors.annotators.pose`).

Missing weights, unreadable weight files and a missing onnxruntime are named in a one-line error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InvalidParameterError, KolorsError
from ..defaults import CANNY_THRESHOLDS
from .pose import DETECTOR_FILE, POSE_FILE

MIDAS_FILE = "dpt_hybrid-midas-501f0c75.pt"  # the timm-format checkpoint controlnet_aux reads (not run here)
MIDAS_FOLDER = "dpt-hybrid-midas"  # the same weights in the transformers layout, as Intel/dpt-hybrid-midas
DWPOSE_FILES = (POSE_FILE, DETECTOR_FILE)
ANNOTATOR_FILES = {"pose": DWPOSE_FILES}
ANNOTATOR_NAMES = {"pose": "DWPose"}
# What --annotators DIR must hold for each kind (the CLI's messages).
ANNOTATOR_HINTS = {"depth": "a transformers DPT folder such as Intel/dpt-hybrid-midas",
                   "pose": f"a folder holding the DWPose files {' and '.join(DWPOSE_FILES)}"}


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


def depth_map(image: Image.Image, *, annotator_dir: str | os.PathLike | None = None) -> Image.Image:
    """The MiDaS depth map of a photo (near is bright), as an RGB image of the same size.

    ``annotator_dir``: a transformers DPT folder (``Intel/dpt-hybrid-midas``), or a folder holding one named
    ``dpt-hybrid-midas``.
    """
    return _dpt_depth(image, _require_dpt_folder(annotator_dir))


def _require_dpt_folder(annotator_dir: str | os.PathLike | None) -> Path:
    """The DPT folder at or in ``annotator_dir``, or a one-line error saying what is missing."""
    folder = _dpt_folder(annotator_dir)
    if folder is None:
        ready = "Control('depth', 'my_depth_map.png') with detect=False"
        where = "pass annotator_dir=DIR" if annotator_dir is None else f"it is not in {annotator_dir}"
        timm = annotator_dir is not None and (Path(annotator_dir).expanduser() / MIDAS_FILE).is_file()
        raise KolorsError(
            f"making a depth map needs MiDaS DPT-Hybrid in the transformers layout (the Intel/dpt-hybrid-midas "
            f"folder: config.json + weights): {where}"
            + (f" ({MIDAS_FILE} is the timm-format checkpoint, which kolors does not read)" if timm else "")
            + f", or pass a ready depth map instead ({ready})"
        )
    return folder


def _dpt_folder(annotator_dir: str | os.PathLike | None) -> Path | None:
    """The transformers DPT model folder at or inside ``annotator_dir``, if there is one."""
    if annotator_dir is None:
        return None
    import json

    base = Path(annotator_dir).expanduser()
    for folder in (base, base / MIDAS_FOLDER):
        config = folder / "config.json"
        if config.is_file():
            try:
                if json.loads(config.read_text(encoding="utf-8")).get("model_type") == "dpt":
                    return folder
            except (OSError, ValueError):
                raise KolorsError(f"cannot read {config}: is it a transformers DPT (MiDaS) folder?") from None
    return None


def _dpt_depth(image: Image.Image, folder: Path) -> Image.Image:
    import torch
    import transformers
    from transformers import DPTForDepthEstimation

    processor_cls = getattr(transformers, "DPTImageProcessorPil", None) or transformers.DPTImageProcessor
    processor = (processor_cls.from_pretrained(folder) if (folder / "preprocessor_config.json").is_file()
                 else processor_cls())
    model = _load_dpt(DPTForDepthEstimation, folder)
    rgb = image.convert("RGB")
    with torch.no_grad():
        depth = model(**processor(images=rgb, return_tensors="pt")).predicted_depth
        depth = torch.nn.functional.interpolate(depth[:, None].float(), size=(rgb.height, rgb.width),
                                                mode="bicubic", align_corners=False)[0, 0]
    span = depth.max() - depth.min()
    unit = (depth - depth.min()) / span if span > 0 else torch.zeros_like(depth)
    scaled = (unit * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(np.repeat(scaled[:, :, None], 3, axis=2))


def _load_dpt(cls, folder: Path):
    try:
        return cls.from_pretrained(folder, local_files_only=True).eval()
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:160]
        raise KolorsError(f"cannot load the MiDaS DPT model in {folder} ({reason})") from None


def pose_map(image: Image.Image, *, annotator_dir: str | os.PathLike | None = None) -> Image.Image:
    """The OpenPose-style skeleton map of the people in a photo, found by DWPose, as an RGB image of the same size.

    ``annotator_dir``: a folder holding the two DWPose ONNX files, ``yolox_l.onnx`` (person detector) and
    ``dw-ll_ucoco_384.onnx`` (whole-body keypoints); they run with onnxruntime (the ``annotators`` extra).
    """
    annotator_files("pose", annotator_dir)
    from .pose import dwpose_map

    return dwpose_map(image, Path(annotator_dir).expanduser())


def check_annotator(kind: str, annotator_dir: str | os.PathLike | None) -> None:
    """The one-line error that making a ``kind`` map from a photo would end in for want of weights or
    onnxruntime, raised before anything is loaded (nothing for kinds without an annotator)."""
    if kind == "depth":
        _require_dpt_folder(annotator_dir)
    elif kind == "pose":
        from .pose import require_onnxruntime

        annotator_files(kind, annotator_dir)
        require_onnxruntime()


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
