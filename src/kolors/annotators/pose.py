"""DWPose, run with onnxruntime: whole-body keypoints of the people in a photo, drawn as an OpenPose map.

The annotator is the two ONNX files that DWPose publishes (``yzd-v/DWPose``), in one folder:

1. ``yolox_l.onnx``, a YOLOX-L COCO detector, finds the people. Its input is one 640×640 BGR image (0–255, not
   normalised): the photo scaled to fit, kept in aspect, in the top-left corner, the rest filled with 114. Its
   output, (1, 8400, 85), is one row per cell of the stride-8/16/32 grids (80², 40², 20²): centre offsets from
   the cell and log sizes, both in strides, then the objectness and the 80 class probabilities. A person (class
   0) is a row whose objectness × person probability is above 0.3; overlapping boxes (IoU above 0.45) keep the
   best one.
2. ``dw-ll_ucoco_384.onnx``, DWPose-L (the RTMPose architecture with a SimCC head), finds the 133 COCO-WholeBody
   keypoints (17 body, 6 feet, 68 face, 21 + 21 hands) of each person, top-down: the box, grown 1.25 times and
   widened or heightened to the input's 3:4 aspect, is cut out to 288×384, RGB normalised by the ImageNet
   mean/std (123.675, 116.28, 103.53 / 58.395, 57.12, 57.375). Its outputs, simcc_x (1, 133, 576) and simcc_y
   (1, 133, 768), are per-keypoint scores along each axis at twice the input's resolution: the peak of each gives
   the keypoint's position in the crop, the smaller of the two peak values its score.

The map is what OpenPose-style ControlNets (Kolors-ControlNet-Pose among them) were trained on, drawn as DWPose
draws it: a black canvas of the photo's size; the 17 COCO body keypoints in OpenPose's 18-point order (the neck
is the middle of the shoulders) joined by the 17 OpenPose limbs in their colours (at 60 % brightness), the
keypoints as dots in full colour; each hand's 20 bones coloured around the hue circle with blue dots; the face
points as white dots. Keypoints scoring 0.3 or less are left out, and so are the limbs and bones that touch them.
"""

from __future__ import annotations

import colorsys
import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import KolorsError

DETECTOR_FILE = "yolox_l.onnx"
POSE_FILE = "dw-ll_ucoco_384.onnx"
INSTALL_HINT = 'pip install "kolors[annotators]"'
NO_ONNXRUNTIME = f"running the DWPose annotator needs onnxruntime: {INSTALL_HINT}"

# YOLOX
DETECTOR_SIZE = (640, 640)  # (height, width) when the file does not fix it
DETECTOR_STRIDES = (8, 16, 32)
LETTERBOX_FILL = 114
PERSON_CLASS = 0
PERSON_THRESHOLD = 0.3
NMS_IOU = 0.45

# DWPose (RTMPose top-down)
POSE_SIZE = (384, 288)  # (height, width) when the file does not fix it
BOX_PADDING = 1.25
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], np.float32)  # RGB
PIXEL_STD = np.array([58.395, 57.12, 57.375], np.float32)

# COCO-WholeBody keypoint ranges (133 in all)
BODY = slice(0, 17)
FACE = slice(23, 91)
LEFT_HAND = slice(91, 112)
RIGHT_HAND = slice(112, 133)
WHOLEBODY_POINTS = 133

# Drawing (OpenPose / DWPose conventions)
KEYPOINT_THRESHOLD = 0.3
NECK = -1  # in OPENPOSE_FROM_COCO: the mean of the two shoulders
# OpenPose's 18 body points (nose, neck, right shoulder/elbow/wrist, left shoulder/elbow/wrist, right hip/knee/ankle,
# left hip/knee/ankle, right eye, left eye, right ear, left ear) as COCO body indices.
OPENPOSE_FROM_COCO = (0, NECK, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
# The 17 limbs ControlNet's OpenPose maps draw, as pairs of OpenPose points (0-based), each in its own colour.
OPENPOSE_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                  (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
OPENPOSE_COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
LIMB_BRIGHTNESS = 0.6  # the limbs are dimmed before the keypoints are drawn over them
LIMB_WIDTH = 4  # half the thickness of a limb's ellipse
BODY_DOT = 4
# A hand: the wrist (0) and four points along each finger, thumb first.
HAND_BONES = tuple((0 if j == 0 else 4 * f + j, 4 * f + j + 1) for f in range(5) for j in range(4))
HAND_LINE = 2
HAND_DOT = 4
HAND_DOT_COLOUR = (0, 0, 255)
FACE_DOT = 3
FACE_DOT_COLOUR = (255, 255, 255)


@dataclass
class Poses:
    """The people found in one photo: ``keypoints`` (N, 133, 2) as (x, y) pixels of the photo, ``scores``
    (N, 133), and the person boxes (N, 4) as (x0, y0, x1, y1) — the whole photo when no person was found."""

    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray


def onnxruntime() -> Any:
    """The onnxruntime module, or a one-line error saying how to install it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise KolorsError(NO_ONNXRUNTIME) from None
    return ort


def require_onnxruntime() -> None:
    """The one-line error of :func:`onnxruntime` when it is not installed, without importing it."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        raise KolorsError(NO_ONNXRUNTIME)


def _providers(ort: Any) -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available] or available


@functools.lru_cache(maxsize=4)
def _cached_session(path: str, stamp: tuple[int, int]) -> Any:
    ort = onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(path, sess_options=options, providers=_providers(ort))
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception classes (InvalidProtobuf, Fail, ...)
        reason = " ".join(str(exc).split())[:200]
        raise KolorsError(f"cannot load the ONNX model {path}: {reason or type(exc).__name__}") from None


def load_session(path: str | os.PathLike) -> Any:
    """An onnxruntime session of the ONNX file ``path`` (CUDA when onnxruntime has it, else CPU), kept while the
    file is unchanged; a missing, unreadable or invalid file is a one-line error naming it."""
    file = Path(path).expanduser()
    try:
        stat = file.stat()
    except OSError:
        raise KolorsError(f"ONNX model not found: {file}") from None
    return _cached_session(str(file), (stat.st_mtime_ns, stat.st_size))


def _input_size(session: Any, default: tuple[int, int], path: str) -> tuple[int, int]:
    """(height, width) of a model's single image input: the file's own when fixed, else ``default``."""
    inputs = session.get_inputs()
    shape = list(inputs[0].shape) if len(inputs) == 1 else []
    if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        raise KolorsError(f"{path} is not the model expected here: it should take one image (1, 3, H, W), "
                          f"it takes {[tuple(i.shape) for i in inputs]}")
    h, w = shape[2:]
    return (h if isinstance(h, int) else default[0], w if isinstance(w, int) else default[1])


# --- stage 1: people ----------------------------------------------------------------------------------------------
def letterbox(bgr: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """The detector's input (1, 3, H, W) float32 for ``bgr`` (h, w, 3 uint8) and the scale applied to it: the
    image resized to fit ``size`` = (H, W) in the top-left corner, the rest filled with 114."""
    import cv2

    ratio = min(size[0] / bgr.shape[0], size[1] / bgr.shape[1])
    w, h = max(1, int(bgr.shape[1] * ratio)), max(1, int(bgr.shape[0] * ratio))
    canvas = np.full((size[0], size[1], 3), LETTERBOX_FILL, np.uint8)
    canvas[:h, :w] = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32), ratio


def _grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) cell of every detector output row and its stride, for the stride-8/16/32 grids in order."""
    cells, strides = [], []
    for stride in DETECTOR_STRIDES:
        rows, cols = size[0] // stride, size[1] // stride
        ys, xs = np.divmod(np.arange(rows * cols), cols)
        cells.append(np.stack([xs, ys], axis=1))
        strides.append(np.full(rows * cols, stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)


def person_boxes(raw: np.ndarray, size: tuple[int, int], ratio: float, *, threshold: float = PERSON_THRESHOLD,
                 iou: float = NMS_IOU) -> np.ndarray:
    """Person boxes (N, 4) as (x0, y0, x1, y1) in the photo's pixels, best first, from the detector's output
    (1, rows, 5 + classes) for an input of ``size`` = (H, W) made by :func:`letterbox` with ``ratio``."""
    rows = raw.reshape(-1, raw.shape[-1]).astype(np.float32)
    cells, strides = _grid(size)
    scores = rows[:, 4] * rows[:, 5 + PERSON_CLASS]
    keep = scores > threshold
    rows, cells, strides, scores = rows[keep], cells[keep], strides[keep], scores[keep]
    centre = (rows[:, :2] + cells) * strides[:, None]
    with np.errstate(over="ignore"):
        half = np.exp(rows[:, 2:4]) * strides[:, None] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1) / ratio
    return boxes[_non_maximum_suppression(boxes, scores, iou)]


def _non_maximum_suppression(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Indices of the boxes kept, best first: each box drops the lower-scoring ones it overlaps by more than
    ``iou`` (intersection over union)."""
    order = list(np.argsort(-scores, kind="stable"))
    area = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)
    kept = []
    while order:
        best, rest = order[0], np.array(order[1:], dtype=int)
        kept.append(int(best))
        if not len(rest):
            break
        low = np.maximum(boxes[best, :2], boxes[rest, :2])
        high = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(high - low, 0, None), axis=1)
        union = area[best] + area[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = list(rest[overlap <= iou])
    return kept


# --- stage 2: keypoints -------------------------------------------------------------------------------------------
def crop_region(box: Sequence[float], aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """The centre (x, y) and size (w, h) of the region cut out for a person ``box`` (x0, y0, x1, y1): the box
    grown 1.25 times, then widened or heightened to ``aspect`` (width / height)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2], np.float64)
    w, h = (x1 - x0) * BOX_PADDING, (y1 - y0) * BOX_PADDING
    size = np.array([w, w / aspect] if w > h * aspect else [h * aspect, h], np.float64)
    return centre, size


def crop_matrix(centre: np.ndarray, size: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """The 2×3 affine map from photo pixels to the (H, W) = ``out_size`` crop of the region ``centre``/``size``."""
    k = out_size[1] / size[0]  # the same as out_size[0] / size[1]: the region has the crop's aspect
    return np.array([[k, 0.0, out_size[1] / 2 - centre[0] * k], [0.0, k, out_size[0] / 2 - centre[1] * k]])


def pose_input(rgb: np.ndarray, centre: np.ndarray, size: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """The pose model's input (1, 3, H, W) float32: the region cut out of ``rgb`` and normalised."""
    import cv2

    crop = cv2.warpAffine(rgb, crop_matrix(centre, size, out_size), (out_size[1], out_size[0]),
                          flags=cv2.INTER_LINEAR)
    normalised = (crop.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None], dtype=np.float32)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, out_size: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (K, 2) in crop pixels and scores (K,) from one person's SimCC outputs (1, K, bins): the peak bin
    divided by the bins per pixel (2 for DWPose); the score is the lower of the two peaks."""
    x, y = simcc_x.reshape(-1, simcc_x.shape[-1]), simcc_y.reshape(-1, simcc_y.shape[-1])
    split = np.array([x.shape[1] / out_size[1], y.shape[1] / out_size[0]])
    points = np.stack([x.argmax(axis=1), y.argmax(axis=1)], axis=1) / split
    return points, np.minimum(x.max(axis=1), y.max(axis=1))


class DWPose:
    """The DWPose annotator: ``DWPose(detector, pose)(image)`` gives the :class:`Poses` of the people in it.

    ``detector``: the YOLOX file (``yolox_l.onnx``); ``pose``: the DWPose file (``dw-ll_ucoco_384.onnx``).
    """

    def __init__(self, detector: str | os.PathLike, pose: str | os.PathLike) -> None:
        self.detector_path, self.pose_path = str(detector), str(pose)
        self.detector = load_session(detector)
        self.pose = load_session(pose)
        self.detector_size = _input_size(self.detector, DETECTOR_SIZE, self.detector_path)
        self.pose_size = _input_size(self.pose, POSE_SIZE, self.pose_path)
        if len(self.pose.get_outputs()) != 2:
            raise KolorsError(f"{self.pose_path} is not a DWPose model: it should give two outputs (simcc_x, "
                              f"simcc_y), it gives {len(self.pose.get_outputs())}")

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """Person boxes (N, 4) in ``rgb`` (h, w, 3 uint8), best first."""
        pixels, ratio = letterbox(np.ascontiguousarray(rgb[:, :, ::-1]), self.detector_size)
        (raw, *_) = self._run(self.detector, self.detector_path, pixels)
        expected = len(_grid(self.detector_size)[0])
        if raw.ndim != 3 or raw.shape[1] != expected or raw.shape[2] < 6:
            raise KolorsError(f"{self.detector_path} is not a YOLOX detector: its output is {tuple(raw.shape)}, "
                              f"expected (1, {expected}, 5 + classes)")
        return person_boxes(raw, self.detector_size, ratio)

    def keypoints(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (N, 133, 2) in photo pixels and their scores (N, 133), one person per box."""
        aspect = self.pose_size[1] / self.pose_size[0]
        points, scores = [], []
        for box in boxes:
            centre, size = crop_region(box, aspect)
            simcc_x, simcc_y = self._run(self.pose, self.pose_path, pose_input(rgb, centre, size, self.pose_size))
            found, score = decode_simcc(simcc_x, simcc_y, self.pose_size)
            # The crop's pixels back to the photo's (the inverse of crop_matrix).
            points.append(found / np.array([self.pose_size[1], self.pose_size[0]]) * size + centre - size / 2)
            scores.append(score)
        if not points:
            return np.zeros((0, WHOLEBODY_POINTS, 2)), np.zeros((0, WHOLEBODY_POINTS))
        return np.stack(points), np.stack(scores)

    def __call__(self, image: Image.Image) -> Poses:
        rgb = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
        boxes = self.detect(rgb)
        if not len(boxes):  # as DWPose does: the whole photo is one person's box
            boxes = np.array([[0.0, 0.0, rgb.shape[1], rgb.shape[0]]])
        keypoints, scores = self.keypoints(rgb, boxes)
        return Poses(keypoints=keypoints, scores=scores, boxes=boxes)

    @staticmethod
    def _run(session: Any, path: str, pixels: np.ndarray) -> list[np.ndarray]:
        try:
            return session.run(None, {session.get_inputs()[0].name: pixels})
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors: a model that does not fit the input
            reason = " ".join(str(exc).split())[:200]
            raise KolorsError(f"running {path} failed: {reason or type(exc).__name__}") from None


# --- drawing ------------------------------------------------------------------------------------------------------
def openpose_body(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One person's 18 OpenPose body points (18, 2) and scores (18,) from the COCO-WholeBody ones: the neck is the
    middle of the shoulders, scoring as the weaker of them."""
    shoulders = [5, 6]
    points = np.stack([keypoints[shoulders].mean(axis=0) if i == NECK else keypoints[i] for i in OPENPOSE_FROM_COCO])
    marks = np.array([scores[shoulders].min() if i == NECK else scores[i] for i in OPENPOSE_FROM_COCO])
    return points, marks


def _point(xy: np.ndarray) -> tuple[int, int]:
    return int(round(float(xy[0]))), int(round(float(xy[1])))


def draw_poses(poses: Poses, size: tuple[int, int], *, threshold: float = KEYPOINT_THRESHOLD) -> np.ndarray:
    """The OpenPose-style map (H, W, 3 uint8 RGB) of ``poses`` on a black canvas of ``size`` = (width, height)."""
    import cv2

    canvas = np.zeros((size[1], size[0], 3), np.uint8)
    bodies = [openpose_body(k, s) for k, s in zip(poses.keypoints, poses.scores)]
    for (a, b), colour in zip(OPENPOSE_LIMBS, OPENPOSE_COLOURS):
        for points, marks in bodies:
            if marks[a] <= threshold or marks[b] <= threshold:
                continue
            (xa, ya), (xb, yb) = points[a], points[b]
            length = math.hypot(xb - xa, yb - ya)
            angle = int(math.degrees(math.atan2(yb - ya, xb - xa)))
            ellipse = cv2.ellipse2Poly(_point(((xa + xb) / 2, (ya + yb) / 2)), (int(length / 2), LIMB_WIDTH),
                                       angle, 0, 360, 1)
            cv2.fillConvexPoly(canvas, ellipse, colour)
    canvas = (canvas * LIMB_BRIGHTNESS).astype(np.uint8)
    for points, marks in bodies:
        for point, mark, colour in zip(points, marks, OPENPOSE_COLOURS):
            if mark > threshold:
                cv2.circle(canvas, _point(point), BODY_DOT, colour, thickness=-1)
    for keypoints, scores in zip(poses.keypoints, poses.scores):
        for hand in (LEFT_HAND, RIGHT_HAND):
            _draw_hand(canvas, keypoints[hand], scores[hand] > threshold)
    for keypoints, scores in zip(poses.keypoints, poses.scores):
        for point, seen in zip(keypoints[FACE], scores[FACE] > threshold):
            if seen:
                cv2.circle(canvas, _point(point), FACE_DOT, FACE_DOT_COLOUR, thickness=-1)
    return canvas


def hand_colour(bone: int) -> tuple[int, int, int]:
    """The RGB colour of hand bone ``bone`` (0–19): full-saturation hues around the circle."""
    return tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(bone / len(HAND_BONES), 1.0, 1.0))


def _draw_hand(canvas: np.ndarray, points: np.ndarray, seen: np.ndarray) -> None:
    import cv2

    for bone, (a, b) in enumerate(HAND_BONES):
        if seen[a] and seen[b]:
            cv2.line(canvas, _point(points[a]), _point(points[b]), hand_colour(bone), thickness=HAND_LINE)
    for point, visible in zip(points, seen):
        if visible:
            cv2.circle(canvas, _point(point), HAND_DOT, HAND_DOT_COLOUR, thickness=-1)


def dwpose_map(image: Image.Image, folder: str | os.PathLike) -> Image.Image:
    """The OpenPose-style pose map (RGB, ``image``'s size) of the people in ``image``, found by the DWPose files
    in ``folder``."""
    base = Path(folder).expanduser()
    poses = DWPose(base / DETECTOR_FILE, base / POSE_FILE)(image)
    return Image.fromarray(draw_poses(poses, image.size))
