"""State dicts from weight files: safetensors or pickle (``weights_only``), single or sharded, plain or variant."""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Collection, Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..errors import ModelLayoutError

# Weight file stems the published layouts use: diffusers models, then transformers models.
WEIGHT_STEMS = ("diffusion_pytorch_model", "model", "pytorch_model")


def _variant_name(stem: str, ext: str, variant: str | None) -> str:
    return f"{stem}.{variant}.{ext}" if variant else f"{stem}.{ext}"


def _index_name(stem: str, ext: str, variant: str | None) -> str:
    return f"{stem}.{ext}.index.{variant}.json" if variant else f"{stem}.{ext}.index.json"


_SHARD_SUFFIX = re.compile(r"-\d{5}-of-\d{5}$")


def _variants_present(folder: Path, ext: str) -> set[str]:
    """Variant names in ``stem.VARIANT.ext`` and sharded ``stem.VARIANT-00001-of-00002.ext`` file names."""
    return {_SHARD_SUFFIX.sub("", p.name.split(".")[-2]) for p in folder.glob(f"*.*.{ext}")}


def find_weight_files(folder: Path, prefer_variant: str | None = None) -> list[Path]:
    """The weight files of one component folder, in load order.

    safetensors beats pickle; among variants, ``prefer_variant`` (e.g. "fp16") is taken first when present,
    then the plain files, then any variant at all.
    """
    variants: list[str | None] = [prefer_variant, None] if prefer_variant else [None]
    variants += sorted(_variants_present(folder, "safetensors") - {prefer_variant})
    variants += sorted(_variants_present(folder, "bin") - set(variants))
    for ext in ("safetensors", "bin"):
        for variant in variants:
            for stem in WEIGHT_STEMS:
                single = folder / _variant_name(stem, ext, variant)
                if single.is_file():
                    return [single]
                index = folder / _index_name(stem, ext, variant)
                if index.is_file():
                    return _shards_from_index(index)
    raise ModelLayoutError(
        f"no weight file in {folder}: expected e.g. diffusion_pytorch_model.safetensors, model.safetensors "
        "or pytorch_model.bin (plain, sharded with an index, or an fp16 variant)"
    )


def _shards_from_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLayoutError(f"cannot read shard index {index}: {exc}") from None
    shards = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    for shard in shards:
        if not shard.is_file():
            raise ModelLayoutError(f"weight shard {shard} listed in {index.name} is missing: the download is incomplete")
    return shards


def read_weight_file(path: Path, skip: Collection[str] = ()) -> dict[str, torch.Tensor]:
    """The tensors of one ``.safetensors`` or pickle ``.bin``/``.pt``/``.ckpt`` file (pickles with weights_only),
    except those named in ``skip`` (never read from a safetensors file)."""
    kind = _file_kind(path)
    try:
        if kind == "safetensors":
            if not skip:
                return load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys() if k not in skip}
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) pickles cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        code = _CODE_GLOBAL.search(str(exc))
        if code is None and "weights only load failed" not in str(exc).lower():
            raise ModelLayoutError(f"weight file {path} is corrupt or truncated ({_first_line(exc)}): "
                                   "download it again") from None
        what = f" ({code[1]})" if code else ""
        raise ModelLayoutError(
            f"refusing to load {path}: it is a pickle that would run code when read{what}, which kolors never "
            "does; use the .safetensors weights instead (published folders have them; `kolors convert` writes "
            "them for folders whose pickles hold only tensors)") from None
    except (SafetensorError, RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as exc:
        raise ModelLayoutError(f"weight file {path} is corrupt or truncated ({_first_line(exc)}): "
                               "download it again") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLayoutError(f"weight file {path} does not hold a plain dict of tensors")
    return {k: v for k, v in state.items() if k not in skip} if skip else state


_CODE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__


def _file_kind(path: Path) -> str:
    """"safetensors" or "pickle", from the file's first bytes; a one-line error for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except FileNotFoundError:
        raise ModelLayoutError(f"weight file not found: {path}") from None
    except IsADirectoryError:
        raise ModelLayoutError(f"{path} is a folder, not a weight file") from None
    except OSError as exc:
        raise ModelLayoutError(f"cannot read weight file {path}: {exc.strerror or exc}") from None
    if path.suffix == ".safetensors" or head[8:9] == b"{":
        return "safetensors"  # an 8-byte header length, then the JSON header
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "pickle"  # torch.save's zip archive, or a legacy pickle
    raise ModelLayoutError(f"{path} is not a weight file (neither safetensors nor a PyTorch checkpoint): "
                           "give the .safetensors file")


def read_state_dict(files: Iterable[Path], skip: Collection[str] = ()) -> dict[str, torch.Tensor]:
    """The merged tensors of several weight files (the shards of one model), except those named in ``skip``."""
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update(read_weight_file(path, skip))
    return state
