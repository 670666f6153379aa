"""Pose maps from DWPose run with onnxruntime, on two tiny ONNX files with the real ones' inputs and outputs.

The tiny detector always reports the same rows (a person, a weaker overlapping duplicate, a car, a faint person);
the tiny pose model always puts each keypoint's SimCC peak at a chosen bin. So where the keypoints land in the
photo, and what the drawn map holds, follow from the decoding and the geometry alone.
"""

from __future__ import annotations

import colorsys
import math
import sys

import numpy as np
import pytest
from PIL import Image

from kolors.annotators import pose
from kolors.annotators.maps import DWPOSE_FILES, check_annotator, control_map
from kolors.errors import KolorsError

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

W, H = 320, 400  # the photo
RATIO = 640 / H  # the detector's letterbox scale
# The person box, its aspect 3:4 so that the region cut out (1.25 times the box) is exactly 288×384 photo pixels:
# crop pixel (x, y) is photo pixel (x + 16, y + 8).
CENTRE, BOX_SIZE = (160.0, 200.0), (230.4, 307.2)
BOX = (CENTRE[0] - BOX_SIZE[0] / 2, CENTRE[1] - BOX_SIZE[1] / 2, CENTRE[0] + BOX_SIZE[0] / 2,
       CENTRE[1] + BOX_SIZE[1] / 2)
CROP_ORIGIN = (16, 8)

# COCO body keypoints in photo pixels (a person facing the camera: their left is the image's right) and scores.
BODY = [(160, 60), (170, 50), (150, 50), (182, 58), (138, 58), (200, 110), (120, 110), (230, 170), (90, 170),
        (250, 230), (70, 230), (185, 230), (135, 230), (190, 300), (130, 300), (192, 370), (128, 370)]
BODY_SCORES = [0.9] * 17
BODY_SCORES[3] = 0.2  # the left ear is too unsure to draw
FEET = [(60, 380)] * 6  # found, but never drawn
FACE_SHOWN = {23: (145, 75), 24: (175, 75), 25: (160, 38)}  # the other 65 face points score 0.1
LEFT_THUMB = [(250, 230), (256, 246), (262, 262), (268, 278), (274, 294)]  # left hand points 0-4; the rest 0.1
HIDDEN = (40, 300)  # where every unsure point is put: it must stay black

# OpenPose's 18 points from the COCO ones (the neck between the shoulders), its 17 limbs and their colours.
OPENPOSE = [BODY[0], (160, 110), BODY[6], BODY[8], BODY[10], BODY[5], BODY[7], BODY[9], BODY[12], BODY[14],
            BODY[16], BODY[11], BODY[13], BODY[15], BODY[2], BODY[1], BODY[4], BODY[3]]
OPENPOSE_SCORES = [0.9] * 17 + [0.2]
LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17)]
COLOURS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
           (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
           (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]


def wholebody() -> tuple[np.ndarray, np.ndarray]:
    """The 133 keypoints (photo pixels) and scores the tiny pose model reports."""
    points = np.array([HIDDEN] * 133, float)
    scores = np.full(133, 0.1)
    points[:17], scores[:17] = BODY, BODY_SCORES
    points[17:23], scores[17:23] = FEET, 0.9
    for i, xy in FACE_SHOWN.items():
        points[i], scores[i] = xy, 0.9
    points[91:96], scores[91:96] = LEFT_THUMB, 0.9
    return points, scores


def save_constant_model(path, input_name: str, input_shape: list[int], outputs: dict[str, np.ndarray]) -> None:
    """An ONNX file whose outputs are the given constants, whatever its image input holds."""
    from onnx import TensorProto, helper, numpy_helper

    def constant(name, value):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, np.float32)))

    nodes = [helper.make_node("ReduceMean", [input_name], ["mean"], keepdims=0), constant("zero", 0.0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"])]
    for name, value in outputs.items():
        nodes += [constant(f"{name}_value", value), helper.make_node("Add", [f"{name}_value", "nothing"], [name])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(v.shape)) for name, v in outputs.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def grid_row(stride: int, x: float, y: float, w: float, h: float, objectness: float, classes: dict[int, float]
             ) -> tuple[int, np.ndarray]:
    """The YOLOX output row (index, 85 values) reporting a box centred at (x, y) of size w×h (input pixels)."""
    cx, cy = int(x // stride), int(y // stride)
    before = sum((640 // s) ** 2 for s in (8, 16, 32) if s < stride)
    values = np.zeros(85, np.float32)
    values[:4] = [x / stride - cx, y / stride - cy, math.log(w / stride), math.log(h / stride)]
    values[4] = objectness
    for c, p in classes.items():
        values[5 + c] = p
    return before + cy * (640 // stride) + cx, values


def save_detector(path, rows: list[tuple[int, np.ndarray]]) -> None:
    raw = np.zeros((1, 8400, 85), np.float32)
    for index, values in rows:
        raw[0, index] = values
    save_constant_model(path, "images", [1, 3, 640, 640], {"output": raw})


def person_rows() -> list[tuple[int, np.ndarray]]:
    x, y, w, h = CENTRE[0] * RATIO, CENTRE[1] * RATIO, BOX_SIZE[0] * RATIO, BOX_SIZE[1] * RATIO
    return [grid_row(32, x, y, w, h, 0.95, {0: 0.9}),  # the person (score 0.855)
            grid_row(16, x + 8, y - 8, w, h, 0.8, {0: 0.8}),  # the same person again, weaker: suppressed
            grid_row(8, 60, 60, 40, 40, 0.99, {2: 0.99}),  # a car
            grid_row(8, 600, 100, 40, 80, 0.5, {0: 0.5})]  # a person below the 0.3 threshold


@pytest.fixture(scope="module")
def dwpose_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dwpose")
    save_detector(folder / "yolox_l.onnx", person_rows())
    points, scores = wholebody()
    crop = points - CROP_ORIGIN  # 288×384 crop pixels; SimCC has 2 bins per pixel
    simcc_x, simcc_y = np.zeros((1, 133, 576), np.float32), np.zeros((1, 133, 768), np.float32)
    for k, ((x, y), s) in enumerate(zip(crop, scores)):
        simcc_x[0, k, round(2 * x)] = s
        simcc_y[0, k, round(2 * y)] = s + 0.05  # the score is the lower of the two peaks
    save_constant_model(folder / "dw-ll_ucoco_384.onnx", "input", [1, 3, 384, 288],
                        {"simcc_x": simcc_x, "simcc_y": simcc_y})
    return folder


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8))


def test_keypoints_come_back_at_their_photo_coordinates(dwpose_dir, photo):
    found = pose.DWPose(dwpose_dir / "yolox_l.onnx", dwpose_dir / "dw-ll_ucoco_384.onnx")(photo)
    assert found.boxes.shape == (1, 4)  # the duplicate, the car and the faint person are gone
    np.testing.assert_allclose(found.boxes[0], BOX, atol=0.05)
    points, scores = wholebody()
    assert found.keypoints.shape == (1, 133, 2) and found.scores.shape == (1, 133)
    assert np.abs(found.keypoints[0] - points).max() <= 0.5
    np.testing.assert_allclose(found.scores[0], scores, atol=1e-6)


def test_the_map_draws_limbs_hands_and_face_in_their_colours_and_nothing_else(dwpose_dir, photo):
    drawn = control_map("pose", photo, detect=True, annotator_dir=dwpose_dir)
    assert drawn.mode == "RGB" and drawn.size == photo.size
    px = np.asarray(drawn).astype(int)

    def at(xy):
        return px[int(round(xy[1])), int(round(xy[0]))]

    shown = [i for i, s in enumerate(OPENPOSE_SCORES) if s > 0.3]
    for limb, ((a, b), colour) in enumerate(zip(LIMBS, COLOURS)):
        middle = ((OPENPOSE[a][0] + OPENPOSE[b][0]) / 2, (OPENPOSE[a][1] + OPENPOSE[b][1]) / 2)
        want = [0, 0, 0] if a not in shown or b not in shown else [int(c * 0.6) for c in colour]
        assert np.abs(at(middle) - want).max() <= 1, (limb, at(middle), want)  # limbs at 60 % brightness
    for i in shown:
        if OPENPOSE[i] != LEFT_THUMB[0]:  # the left wrist is under the hand's first dot
            assert list(at(OPENPOSE[i])) == list(COLOURS[i]), i
    assert list(at(BODY[3])) == [0, 0, 0]  # the unsure left ear: no dot
    for bone in range(4):
        hue = [round(c * 255) for c in colorsys.hsv_to_rgb(bone / 20, 1.0, 1.0)]
        a, b = LEFT_THUMB[bone], LEFT_THUMB[bone + 1]
        assert np.abs(at(((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)) - hue).max() <= 1, bone
    assert all(list(at(xy)) == [0, 0, 255] for xy in LEFT_THUMB)  # the hand's dots
    assert all(list(at(xy)) == [255, 255, 255] for xy in FACE_SHOWN.values())

    # Black everywhere farther than 6 pixels from every drawn point and segment (feet, unsure points: nowhere).
    ys, xs = np.mgrid[0:H, 0:W]
    near = np.zeros((H, W), bool)
    segments = [(OPENPOSE[a], OPENPOSE[b]) for a, b in LIMBS if a in shown and b in shown]
    segments += list(zip(LEFT_THUMB, LEFT_THUMB[1:]))
    segments += [(xy, xy) for xy in [OPENPOSE[i] for i in shown] + list(FACE_SHOWN.values())]
    for (ax, ay), (bx, by) in segments:
        dx, dy = bx - ax, by - ay
        t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
        near |= np.hypot(xs - ax - t * dx, ys - ay - t * dy) <= 6
    assert near.mean() < 0.2 and not px[~near].any()
    assert px[near].any(axis=1).mean() > 0.5


def test_without_a_person_the_whole_photo_is_the_box(dwpose_dir, tmp_path, photo):
    save_detector(tmp_path / "yolox_l.onnx", [grid_row(32, 320, 320, 300, 400, 0.2, {0: 0.5})])
    found = pose.DWPose(tmp_path / "yolox_l.onnx", dwpose_dir / "dw-ll_ucoco_384.onnx")(photo)
    np.testing.assert_allclose(found.boxes, [[0, 0, W, H]])
    assert found.keypoints.shape == (1, 133, 2)


def test_model_inputs_are_a_bgr_letterbox_and_a_normalised_rgb_crop(dwpose_dir):
    """What the two models are fed: the detector the photo in BGR, scaled into the top-left corner of a 640×640
    canvas of 114; the pose model the person's region, RGB, normalised with the ImageNet mean/std."""
    annotator = pose.DWPose(dwpose_dir / "yolox_l.onnx", dwpose_dir / "dw-ll_ucoco_384.onnx")
    fed = {}

    class Recording:
        def __init__(self, session, key):
            self.session, self.key = session, key

        def get_inputs(self):
            return self.session.get_inputs()

        def run(self, names, feeds):
            fed[self.key] = next(iter(feeds.values()))
            return self.session.run(names, feeds)

    annotator.detector = Recording(annotator.detector, "detector")
    annotator.pose = Recording(annotator.pose, "pose")
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    rgb[8:20, 16:40] = (255, 255, 255)  # a white patch at the crop's top-left corner
    annotator(Image.fromarray(rgb))

    det = fed["detector"]
    assert det.shape == (1, 3, 640, 640) and det.dtype == np.float32
    content = int(W * RATIO)  # 512 columns of photo, then padding
    assert (det[0, :, :, content:] == 114).all()
    assert (det[0, :, 600:, :400] == [[[50.0]], [[100.0]], [[200.0]]]).all()  # B, G, R
    crop = fed["pose"]
    assert crop.shape == (1, 3, 384, 288) and crop.dtype == np.float32
    mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
    np.testing.assert_allclose(crop[0, :, 200, 150], (np.array([200, 100, 50]) - mean) / std, rtol=1e-5)
    np.testing.assert_allclose(crop[0, :, 5, 10], (255 - mean) / std, rtol=1e-5)  # photo (26, 13): the patch
    np.testing.assert_allclose(crop[0, :, 14, 10], (np.array([200, 100, 50]) - mean) / std, rtol=1e-5)


@pytest.mark.parametrize("missing", DWPOSE_FILES)
def test_a_missing_file_is_named(dwpose_dir, tmp_path, photo, missing):
    for name in DWPOSE_FILES:
        if name != missing:
            (tmp_path / name).write_bytes((dwpose_dir / name).read_bytes())
    with pytest.raises(KolorsError, match=f"{missing} is not in {tmp_path}") as err:
        control_map("pose", photo, detect=True, annotator_dir=tmp_path)
    assert "\n" not in str(err.value)


def test_an_invalid_onnx_file_is_named(dwpose_dir, tmp_path, photo):
    (tmp_path / "dw-ll_ucoco_384.onnx").write_bytes((dwpose_dir / "dw-ll_ucoco_384.onnx").read_bytes())
    (tmp_path / "yolox_l.onnx").write_bytes(b"<html>rate limited</html>")  # e.g. a failed download
    with pytest.raises(KolorsError, match=r"cannot load the ONNX model .*yolox_l\.onnx") as err:
        control_map("pose", photo, detect=True, annotator_dir=tmp_path)
    assert "\n" not in str(err.value)


def test_without_onnxruntime_the_error_says_what_to_install(dwpose_dir, photo, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    pose._cached_session.cache_clear()
    for attempt in (lambda: control_map("pose", photo, detect=True, annotator_dir=dwpose_dir),
                    lambda: check_annotator("pose", dwpose_dir)):
        with pytest.raises(KolorsError, match=r'needs onnxruntime: pip install "kolors\[annotators\]"') as err:
            attempt()
        assert "\n" not in str(err.value)
    pose._cached_session.cache_clear()


def test_cli_detects_pose_with_the_annotator_and_records_it(tiny_kolors_diffusers, controlnet_dir, dwpose_dir, photo,
                                                            tmp_path, capsys, monkeypatch):
    from kolors.cli.main import main
    from kolors.metadata import read_parameters

    photo.save(tmp_path / "photo.png")
    maps = []
    real = pose.dwpose_map
    monkeypatch.setattr(pose, "dwpose_map", lambda image, folder: maps.append(real(image, folder)) or maps[-1])
    out = tmp_path / "p.png"
    code = main(["generate", "a dancer", "--model", str(tiny_kolors_diffusers), "--control",
                 f"pose={tmp_path / 'photo.png'}", "--controlnet", f"pose={controlnet_dir}", "--detect", "pose",
                 "--annotators", str(dwpose_dir), "--width", "32", "--height", "40", "--steps", "2", "-o", str(out),
                 "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert len(maps) == 1 and maps[0].size == (W, H) and np.asarray(maps[0]).any()
    assert read_parameters(out)["controls"][0]["detect"] is True


def test_cli_names_a_missing_pose_file_before_loading_the_model(tiny_kolors_diffusers, photo, tmp_path, capsys,
                                                                 monkeypatch):
    from kolors.cli.main import main
    from kolors.pipelines.legacy import Text2ImagePipeline

    monkeypatch.setattr(Text2ImagePipeline, "from_pretrained",
                        classmethod(lambda cls, *a, **k: pytest.fail("the model was loaded")))
    photo.save(tmp_path / "photo.png")
    (tmp_path / "cn").mkdir()
    code = main(["generate", "a dancer", "--model", str(tiny_kolors_diffusers), "--control",
                 f"pose={tmp_path / 'photo.png'}", "--controlnet", f"pose={tmp_path / 'cn'}", "--detect", "pose",
                 "--annotators", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "DWPose annotator weight file dw-ll_ucoco_384.onnx is not in" in err
