"""``kolors convert``: a published Kolors folder rewritten once as fp16 safetensors, for fast, safe loading.

The original release ships ChatGLM3 as pickle ``.bin`` shards: slow to read (unpickling, then a dtype copy) and
only safe with ``weights_only``. The converted folder has the same layout and configs; every component's weights
become the ``fp16`` variant in safetensors (memory-mappable), shard for shard, so memory stays bounded by one
shard. Python files shipped in the source folder are not copied.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import KolorsError
from .locate import check_model_folder, locate_model
from .weights import find_weight_files, read_weight_file

__all__ = ["ConversionReport", "convert_model"]

WEIGHT_COMPONENTS = {"text_encoder": "model", "unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model"}
COPIED_COMPONENTS = ("scheduler", "tokenizer")
VARIANT = "fp16"


@dataclass
class ConversionReport:
    """What a conversion wrote: per component the number of tensors, shards and bytes."""

    folder: Path
    components: dict[str, dict] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(c["bytes"] for c in self.components.values())


def convert_model(
    source: str | Path | None,
    destination: str | Path,
    *,
    overwrite: bool = False,
    on_file: Callable[[Path], None] | None = None,
) -> ConversionReport:
    """Write ``source`` (a model folder or cached Hub id; None: the default model) to ``destination`` in fp16
    safetensors. The destination appears only when complete; ``overwrite`` replaces an existing one."""
    src = locate_model(source)
    check_model_folder(src)
    dst = Path(destination)
    if dst.exists() and not overwrite:
        raise KolorsError(f"{dst} already exists: choose a new folder or pass --overwrite")
    if dst.resolve() == src.resolve():
        raise KolorsError("the destination must be a different folder from the source")
    tmp = dst.with_name(dst.name + ".converting")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    report = ConversionReport(folder=dst)
    try:
        for name in ("model_index.json", "kolors_defaults.json", "README.md"):
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        for component in COPIED_COMPONENTS:
            _copy_configs(src / component, tmp / component, keep_data_files=True)
        for component, stem in WEIGHT_COMPONENTS.items():
            _copy_configs(src / component, tmp / component, keep_data_files=False)
            report.components[component] = _convert_weights(src / component, tmp / component, stem, on_file)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return report


def _copy_configs(src: Path, dst: Path, *, keep_data_files: bool) -> None:
    """Configs (and for tokenizer/scheduler every data file), never Python files or weights."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.iterdir()):
        if not path.is_file() or path.suffix == ".py":
            continue
        is_weights = path.suffix in (".bin", ".safetensors", ".pt", ".ckpt") or path.name.endswith(".index.json")
        if path.suffix == ".json" and not is_weights:
            config = json.loads(path.read_text(encoding="utf-8"))
            config.pop("auto_map", None)  # points at the Python files that are not copied
            if "torch_dtype" in config:
                config["torch_dtype"] = "float16"
            (dst / path.name).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        elif keep_data_files and not is_weights:
            shutil.copy2(path, dst / path.name)


def _convert_weights(src: Path, dst: Path, stem: str, on_file: Callable[[Path], None] | None) -> dict:
    """Each source shard as one fp16 safetensors shard, with a variant index when there are several."""
    files = find_weight_files(src, prefer_variant=VARIANT)
    n = len(files)
    names = ([f"{stem}.{VARIANT}.safetensors"] if n == 1
             else [f"{stem}.{VARIANT}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])
    weight_map: dict[str, str] = {}
    total = tensors = 0
    for path, name in zip(files, names):
        if on_file is not None:
            on_file(path)
        state = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
                 for k, v in read_weight_file(path).items()}
        save_file(state, str(dst / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(state, name))
        total += sum(v.numel() * v.element_size() for v in state.values())
        tensors += len(state)
        del state
    if n > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (dst / f"{stem}.safetensors.index.{VARIANT}.json").write_text(json.dumps(index, indent=2) + "\n",
                                                                        encoding="utf-8")
    return {"tensors": tensors, "shards": n, "bytes": total, "from": [p.name for p in files]}
