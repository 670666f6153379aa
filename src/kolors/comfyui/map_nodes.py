"""Preprocessors: control maps for the Kolors ControlNets from photos (kolors.annotators.maps).

Canny edges need no weights. Depth (MiDaS DPT-Hybrid, transformers layout: models/annotators/dpt-hybrid-midas/)
and pose (DWPose: models/annotators/yolox_l.onnx and dw-ll_ucoco_384.onnx, with onnxruntime) need their weights in
ComfyUI's models/annotators/ folder; nothing is downloaded. Every image of a batch gets its map.
"""

from __future__ import annotations

from typing import Any

from ..defaults import CANNY_THRESHOLDS
from . import folders


def _maps(kind: str, image: Any, **options: Any) -> tuple[Any]:
    from ..annotators.maps import control_map
    from . import tensors

    pictures = [tensors.to_pil(image, i) for i in range(tensors.image_count(image))]
    return (tensors.from_pil([control_map(kind, p, detect=True, **options) for p in pictures]),)


class _MapNode:
    """What the map nodes share: an IMAGE in, its maps out; ``KIND`` maps detected with weights in
    models/annotators/."""

    KIND = ""
    CATEGORY = "Kolors/preprocessors"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("map",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE", {})}}

    def make(self, image: Any) -> tuple[Any]:
        return _maps(self.KIND, image, annotator_dir=folders.first_root("annotators"))


class KolorsCannyMap(_MapNode):
    """Canny edges of a photo (white edges on black), as the Kolors canny ControlNet was trained on."""

    DESCRIPTION = "Canny edge map (OpenCV, on the RGB pixels as the official Kolors scripts) for the canny ControlNet."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        threshold = {"min": 0, "max": 255}
        return {"required": {
            "image": ("IMAGE", {}),
            "low_threshold": ("INT", {"default": CANNY_THRESHOLDS[0], **threshold}),
            "high_threshold": ("INT", {"default": CANNY_THRESHOLDS[1], **threshold}),
        }}

    def make(self, image: Any, low_threshold: int, high_threshold: int) -> tuple[Any]:
        return _maps("canny", image, thresholds=(low_threshold, high_threshold))


class KolorsDepthMap(_MapNode):
    """MiDaS depth map of a photo (near is bright), from weights in models/annotators/."""

    KIND = "depth"
    DESCRIPTION = ("Depth map for the depth ControlNet, by MiDaS DPT-Hybrid (transformers' Intel/dpt-hybrid-midas "
                   "folder in models/annotators/dpt-hybrid-midas/).")


class KolorsPoseMap(_MapNode):
    """DWPose pose map of a photo (OpenPose drawing), from weights in models/annotators/."""

    KIND = "pose"
    DESCRIPTION = ("Pose map for the pose ControlNet, by DWPose (yolox_l.onnx and dw-ll_ucoco_384.onnx in "
                   "models/annotators/; needs onnxruntime).")
