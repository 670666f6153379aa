"""Loading a Kolors model: a published folder, or single files as ComfyUI users keep them; and a ComfyUI VAE.

A loaded model is a ``KOLORS_MODEL`` (:class:`~kolors.comfyui.objects.KolorsModel`). ComfyUI caches a node's
outputs while its inputs stay the same, so a model is loaded once per set of loader settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..defaults import MODES, TEXT_ENCODER_QUANTS
from ..devices import DEVICES, DTYPES
from . import folders
from .objects import MODEL, KolorsModel

BUILTIN = folders.BUILTIN
MODE_QUANT = "mode default"
FROM_FOLDER = "(from the model folder)"
MODES_TOOLTIP = "exact: the reference; fast: fewer steps (DPM++ 2M); low-memory: int8 text encoder, offload, tiled " \
    "VAE; sequential: weights streamed layer by layer (docs/performance.md)"


def _settings() -> dict[str, Any]:
    """The run settings every loader offers."""
    return {
        "mode": (list(MODES), {"default": "exact", "tooltip": MODES_TOOLTIP}),
        "text_encoder_quant": ([MODE_QUANT, *TEXT_ENCODER_QUANTS], {
            "default": MODE_QUANT,
            "tooltip": "weight-only quantisation of the ChatGLM3 text encoder through torchao (int8 halves its "
                       "memory, int4 quarters it); 'mode default' follows the mode"}),
        "dtype": (["auto", *DTYPES], {"default": "auto", "tooltip": "auto: float16 on GPUs, float32 on CPUs"}),
        "device": (list(DEVICES), {"default": "auto", "tooltip": "auto: the device ComfyUI computes on"}),
    }


def _device(name: str) -> str:
    """'auto' is ComfyUI's own device (--cpu honoured); the kolors choice outside ComfyUI."""
    if name != "auto":
        return name
    try:
        import comfy.model_management
    except ImportError:
        return "auto"
    return str(comfy.model_management.get_torch_device())


def _model_folder(choice: str, path: str = "") -> str | None:
    """The folder a loader's choice names (None: the built-in model)."""
    if path.strip():
        return path.strip()
    if choice == BUILTIN:
        return None
    found = folders.folder_path("diffusers", choice)
    if found is None:
        from ..errors import ModelLayoutError

        raise ModelLayoutError(f"model folder '{choice}' is not in ComfyUI's models/diffusers/ any more: pick another")
    return str(found)


def check_model_path(path: str) -> bool | str:
    """ComfyUI's input check for a typed model path: True, or our one-line message."""
    if not path or not path.strip():
        return True
    from ..errors import KolorsError
    from ..loading.locate import check_model_folder, locate_model

    try:
        check_model_folder(locate_model(path.strip()))
    except KolorsError as exc:
        return str(exc)
    return True


def load(model: str | None, mode: str, text_encoder_quant: str, dtype: str, device: str,
         **files: Any) -> KolorsModel:
    from ..pipelines.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(
        model, device=_device(device), dtype=dtype, mode=mode,
        text_encoder_quant=None if text_encoder_quant == MODE_QUANT else text_encoder_quant,
        annotator_dir=folders.first_root("annotators"), **files)
    return KolorsModel(pipe)



class KolorsModelLoader:
    """A Kolors model folder (either published layout) from models/diffusers/ or any path; the built-in model."""

    CATEGORY = "Kolors/loaders"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"
    DESCRIPTION = ("Loads a Kolors model: a folder in models/diffusers/ (Kwai-Kolors/Kolors or Kolors-diffusers "
                   "layout), any folder given as path, or the small built-in model.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ([BUILTIN, *folders.folders("diffusers", "model_index.json")], {
                    "default": BUILTIN, "tooltip": "a folder in models/diffusers/, or the built-in model"}),
                **_settings(),
            },
            "optional": {
                "path": ("STRING", {"default": "", "tooltip": "any Kolors model folder (or a Hub id already in the "
                                                              "local cache); overrides 'model' when set"}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, path: str = "") -> bool | str:
        return check_model_path(path)

    def load(self, model: str, mode: str, text_encoder_quant: str, dtype: str, device: str,
             path: str = "") -> tuple[KolorsModel]:
        return (load(_model_folder(model, path), mode, text_encoder_quant, dtype, device),)


class KolorsSingleFileLoader:
    """Kolors from single weight files (models/unet, models/text_encoders or models/LLM, models/vae) with a model
    folder giving the configs and the tokenizer."""

    CATEGORY = "Kolors/loaders"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"
    DESCRIPTION = ("Loads Kolors from single files: the UNet from models/unet/, ChatGLM3 from models/text_encoders/ "
                   "or models/LLM/, the VAE from models/vae/. The configs and the tokenizer come from a Kolors "
                   "model folder (its weights are only read for parts not given as files).")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "unet": ([FROM_FOLDER, *folders.files("diffusion_models")], {
                    "tooltip": "a Kolors UNet .safetensors (diffusers or original key names)"}),
                "text_encoder": ([FROM_FOLDER, *folders.files("text_encoders", "LLM")], {
                    "tooltip": "a ChatGLM3 .safetensors (e.g. chatglm3-fp16.safetensors)"}),
                "vae": ([FROM_FOLDER, *folders.files("vae")], {
                    "tooltip": "the SDXL VAE .safetensors (diffusers or original key names)"}),
                "config": ([BUILTIN, *folders.folders("diffusers", "model_index.json")], {
                    "tooltip": "a Kolors model folder: its model_index.json, configs and tokenizer"}),
                **_settings(),
            },
        }

    def load(self, unet: str, text_encoder: str, vae: str, config: str, mode: str, text_encoder_quant: str,
             dtype: str, device: str) -> tuple[KolorsModel]:
        files = {"unet_file": self._file(unet, "diffusion_models"),
                 "text_encoder_file": self._file(text_encoder, "text_encoders", "LLM"),
                 "vae_file": self._file(vae, "vae")}
        return (load(_model_folder(config), mode, text_encoder_quant, dtype, device, **files),)

    @staticmethod
    def _file(name: str, *kinds: str) -> Path | None:
        if name == FROM_FOLDER:
            return None
        path = folders.file_path(name, *kinds)
        if path is None:
            from ..errors import ModelLayoutError

            raise ModelLayoutError(f"weight file '{name}' is not in ComfyUI's models/{kinds[0]}/ any more")
        return path


SDXL_VAE = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
            "norm_num_groups": 32, "in_channels": 3, "out_channels": 3}


class KolorsStockVAE:
    """The model's VAE as ComfyUI's own VAE (for the stock VAE Decode / Encode and other VAE nodes)."""

    CATEGORY = "Kolors/loaders"
    RETURN_TYPES = ("VAE",)
    RETURN_NAMES = ("vae",)
    FUNCTION = "convert"
    DESCRIPTION = ("ComfyUI's VAE made from the Kolors model's VAE, for the stock VAE nodes. Only Kolors' SDXL VAE "
                   "has an architecture ComfyUI's VAE loader knows; for other models (the built-in one) use "
                   "Kolors VAE Decode / Encode.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": (MODEL, {})}}

    def convert(self, model: KolorsModel) -> tuple[Any]:
        import comfy.sd

        vae = model.pipe.components.vae
        config = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in vae.config.items()}
        differs = [k for k, v in SDXL_VAE.items() if config.get(k) != v]
        if differs:
            from ..errors import KolorsError

            k = differs[0]
            raise KolorsError(f"this model's VAE is not the SDXL VAE ComfyUI's VAE nodes load ({k} is {config.get(k)}, "
                              f"not {SDXL_VAE[k]}): use Kolors VAE Decode / Kolors VAE Encode instead")
        state = {k: v.detach().float().cpu() for k, v in vae.state_dict().items()}
        return (comfy.sd.VAE(sd=state),)
