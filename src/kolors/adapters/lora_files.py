"""Which files make up a LoRA, checked without torch (so the CLI can refuse a bad ``--lora`` before the model loads).

A LoRA is one ``.safetensors`` file, or a Kolors DreamBooth checkpoint folder holding ``pytorch_lora_weights.
safetensors`` (UNet) and/or peft's ``adapter_model.safetensors`` (text encoder). Pickle files (``.bin``, ``.pt``,
…) run code when read and are refused unless explicitly allowed.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import KolorsError

SAFETENSORS_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# Files of a Kolors DreamBooth checkpoint folder: the diffusers UNet LoRA and peft's text-encoder adapter.
DREAMBOOTH_FILES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")


def lora_files(path: Path, *, allow_pickle: bool = False) -> list[Path]:
    """The weight files of the LoRA at ``path``; a one-line KolorsError naming what is wrong otherwise."""
    if path.is_dir():
        files = [path / f for f in DREAMBOOTH_FILES if (path / f).is_file()]
        if not files:
            raise KolorsError(f"LoRA folder {path} holds no {' or '.join(DREAMBOOTH_FILES)}: pass the LoRA file")
        return files
    if not path.is_file():
        raise KolorsError(f"LoRA file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise KolorsError(
            f"LoRA file {path} is a pickle ({suffix}), which can run code when read: use the LoRA's .safetensors "
            "release, or convert the file to .safetensors on a machine where you trust it"
        )
    if suffix != SAFETENSORS_SUFFIX and suffix not in PICKLE_SUFFIXES:
        raise KolorsError(f"LoRA file {path} is not a .safetensors file")
    return [path]
