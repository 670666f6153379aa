"""LoRA, ControlNet, IP-Adapter / FaceID and PAG nodes; each returns a changed copy of what it is given.

They stack as in ComfyUI's own nodes: LoRA nodes chain on the model (each adds one), IP-Adapter, FaceID and PAG
apply to the model too, and Apply ControlNet adds a control to the (positive) conditioning, so several
ControlNets chain. The adapters' weights are loaded once by the model's pipeline when a sampler first uses them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..defaults import CONTROL_END, CONTROL_SCALE, CONTROL_START, FACE_ID_SCALE, IP_ADAPTER_SCALE, PAG_LAYERS
from ..request import CONTROL_TYPES, MAX_ADAPTER_SCALE, MAX_LORA_WEIGHT, MAX_PAG_SCALE
from . import folders
from .objects import CONDITIONING, CONTROLNET, MODEL, KolorsConditioning, KolorsControlNet, KolorsModel


def _missing(what: str, name: str, kind: str) -> Exception:
    from ..errors import ModelLayoutError

    return ModelLayoutError(f"{what} '{name}' is not in ComfyUI's models/{kind}/ any more: pick another")


class KolorsLoRA:
    """A LoRA from models/loras/ applied to the model (chain several)."""

    CATEGORY = "Kolors/adapters"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    FUNCTION = "apply"
    DESCRIPTION = ("Applies a Kolors LoRA (.safetensors from models/loras/: kohya, diffusers or peft names; UNet and "
                   "text-encoder parts) at a strength. Chain several LoRA nodes to combine LoRAs.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": (MODEL, {}),
            "lora_name": (folders.files("loras"), {"tooltip": "a LoRA file in models/loras/"}),
            "strength": ("FLOAT", {"default": 1.0, "min": -MAX_LORA_WEIGHT, "max": MAX_LORA_WEIGHT, "step": 0.01}),
        }}

    def apply(self, model: KolorsModel, lora_name: str, strength: float) -> tuple[KolorsModel]:
        from ..request import Lora

        path = folders.file_path(lora_name, "loras")
        if path is None:
            raise _missing("LoRA", lora_name, "loras")
        return (model.replace(loras=(*model.loras, Lora(str(path), strength))),)


class KolorsControlNetLoader:
    """A Kolors ControlNet folder from models/controlnet/ (canny, depth or pose), or the built-in canny one."""

    CATEGORY = "Kolors/adapters"
    RETURN_TYPES = (CONTROLNET,)
    RETURN_NAMES = ("controlnet",)
    FUNCTION = "load"
    DESCRIPTION = ("Picks a Kolors ControlNet: a diffusers folder in models/controlnet/ (Kolors-ControlNet-Canny, "
                   "-Depth, -Pose) or the canny ControlNet of the built-in model. It is loaded by the sampler.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"controlnet": ([folders.BUILTIN_CANNY, *folders.folders("controlnet", "config.json")],
                                            {"tooltip": "a ControlNet folder in models/controlnet/"})}}

    def load(self, controlnet: str) -> tuple[KolorsControlNet]:
        if controlnet == folders.BUILTIN_CANNY:
            from ..adapters.controlnet import embedded_controlnet

            folder = embedded_controlnet("canny")
            if folder is None:
                from ..errors import ModelLayoutError

                raise ModelLayoutError("the built-in canny ControlNet is not installed in this copy of kolors")
            return (KolorsControlNet("canny", str(folder)),)
        folder = folders.folder_path("controlnet", controlnet)
        if folder is None:
            raise _missing("ControlNet", controlnet, "controlnet")
        kind = next((k for k in CONTROL_TYPES if k in controlnet.lower()), "control")
        return (KolorsControlNet(kind, str(folder)),)


class KolorsApplyControlNet:
    """A ControlNet steering the prompt with a control map (from the preprocessor nodes, or ready-made)."""

    CATEGORY = "Kolors/adapters"
    RETURN_TYPES = (CONDITIONING,)
    RETURN_NAMES = ("conditioning",)
    FUNCTION = "apply"
    DESCRIPTION = ("Adds a ControlNet to the positive prompt: the control map (canny edges, depth, pose: see the "
                   "Kolors map nodes), how strongly it steers, and the part of the steps in which it acts. Chain "
                   "several to combine ControlNets.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        fraction = {"min": 0.0, "max": 1.0, "step": 0.01}
        return {"required": {
            "conditioning": (CONDITIONING, {}),
            "controlnet": (CONTROLNET, {}),
            "image": ("IMAGE", {"tooltip": "the control map"}),
            "strength": ("FLOAT", {"default": CONTROL_SCALE, "min": 0.0, "max": MAX_ADAPTER_SCALE, "step": 0.01}),
            "start_percent": ("FLOAT", {"default": CONTROL_START, **fraction}),
            "end_percent": ("FLOAT", {"default": CONTROL_END, **fraction}),
        }}

    def apply(self, conditioning: KolorsConditioning, controlnet: KolorsControlNet, image: Any, strength: float,
              start_percent: float, end_percent: float) -> tuple[KolorsConditioning]:
        from ..request import Control
        from .tensors import to_pil

        control = Control(controlnet.kind, to_pil(image), scale=strength, start=start_percent, end=end_percent,
                          controlnet=controlnet.folder, detect=False)
        control.validate()
        return (conditioning.replace(controls=(*conditioning.controls, control)),)


def _adapter_choices(kind: str) -> list[str]:
    """The folders in models/ipadapter/ holding an adapter of ``kind`` (ip_adapter / face_id)."""
    from ..adapters.ip_adapter import FACE_ID_FILES, PLUS, PLUS_FILES

    return folders.folders("ipadapter", *(PLUS_FILES if kind == PLUS else FACE_ID_FILES))


def _adapter_folder(name: str) -> str:
    folder = folders.folder_path("ipadapter", name)
    if folder is None:
        raise _missing("adapter folder", name, "ipadapter")
    return str(folder)


class KolorsIPAdapter:
    """Kolors-IP-Adapter-Plus: a reference image steering the picture."""

    CATEGORY = "Kolors/adapters"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    FUNCTION = "apply"
    DESCRIPTION = ("Applies Kolors-IP-Adapter-Plus (a folder in models/ipadapter/ with ip_adapter_plus_general.bin "
                   "and image_encoder/) with a reference image at a scale.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": (MODEL, {}),
            "ipadapter": (_adapter_choices("ip_adapter"), {"tooltip": "a Kolors-IP-Adapter-Plus folder"}),
            "image": ("IMAGE", {"tooltip": "the reference image"}),
            "scale": ("FLOAT", {"default": IP_ADAPTER_SCALE, "min": 0.0, "max": MAX_ADAPTER_SCALE, "step": 0.01}),
        }}

    def apply(self, model: KolorsModel, ipadapter: str, image: Any, scale: float) -> tuple[KolorsModel]:
        from ..request import ImagePrompt
        from .tensors import to_pil

        return (model.replace(ip_adapter=ImagePrompt(_adapter_folder(ipadapter), to_pil(image), scale)),)


class KolorsFaceID:
    """Kolors-IP-Adapter-FaceID-Plus: a face kept in the picture."""

    CATEGORY = "Kolors/adapters"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    FUNCTION = "apply"
    DESCRIPTION = ("Applies Kolors-IP-Adapter-FaceID-Plus (a folder in models/ipadapter/ with ipa-faceid-plus.bin and "
                   "clip-vit-large-patch14-336/). The face is found in the photo by insightface's antelopev2 models "
                   "(models/insightface/models/antelopev2/); or give a 512-d face embedding file (.npy/.pt) and the "
                   "face crop as the image.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": (MODEL, {}),
                "ipadapter": (_adapter_choices("face_id"), {"tooltip": "a Kolors-IP-Adapter-FaceID-Plus folder"}),
                "face": ("IMAGE", {"tooltip": "a photo with the face (or the face crop, with an embedding file)"}),
                "scale": ("FLOAT", {"default": FACE_ID_SCALE, "min": 0.0, "max": MAX_ADAPTER_SCALE, "step": 0.01}),
            },
            "optional": {
                "embedding": ("STRING", {"default": "", "tooltip": "a 512-d antelopev2 face embedding (.npy/.pt): "
                                                                   "then 'face' is the face crop"}),
            },
        }

    def apply(self, model: KolorsModel, ipadapter: str, face: Any, scale: float,
              embedding: str = "") -> tuple[KolorsModel]:
        from ..request import FaceId
        from .tensors import to_pil

        folder = _adapter_folder(ipadapter)
        photo = to_pil(face)
        if embedding.strip():
            spec = FaceId(folder, embedding.strip(), image=photo, scale=scale)
        else:
            from ..adapters.ip_adapter import detect_face

            root = folders.first_root("insightface")
            found, crop = detect_face(photo, root if root and (root / "models").is_dir() else None, Path(folder))
            spec = FaceId(folder, found, image=crop, scale=scale)
        spec.validate()
        return (model.replace(face_id=spec),)


class KolorsPAG:
    """Perturbed-attention guidance: sharper structure at some extra cost per step."""

    CATEGORY = "Kolors/adapters"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    FUNCTION = "apply"
    DESCRIPTION = ("Perturbed-attention guidance (as diffusers' KolorsPAGPipeline): a third UNet pass with the "
                   "self-attention of some layers perturbed steers away from blurry structure.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": (MODEL, {}),
            "scale": ("FLOAT", {"default": 3.0, "min": 0.0, "max": MAX_PAG_SCALE, "step": 0.1}),
            "layers": ("STRING", {"default": ",".join(PAG_LAYERS),
                                  "tooltip": "comma-separated UNet layers to perturb, e.g. mid or down_blocks.2"}),
        }}

    def apply(self, model: KolorsModel, scale: float, layers: str) -> tuple[KolorsModel]:
        from ..request import GenerationRequest

        names = tuple(part.strip() for part in layers.split(",") if part.strip()) or None
        checked = GenerationRequest("", pag_scale=scale, pag_layers=names if scale else None).validate()
        return (model.replace(pag_scale=checked.pag_scale, pag_layers=checked.pag_layers),)
