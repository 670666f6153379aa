"""``kolors convert``: a published Kolors folder rewritten once as fp16 safetensors, for fast, safe loading.

The original release ships ChatGLM3 as pickle ``.bin`` shards: slow to read (unpickling, then a dtype copy) and
only safe with ``weights_only``. The converted folder has the same layout and configs; every component's weights
become the ``fp16`` variant in safetensors (memory-mappable), shard for shard, so memory stays bounded by one
shard. Python files shipped in the source folder are not copied.

ControlNets that belong to the model travel with it into ``controlnet-<type>/`` folders inside the destination,
where ``--control TYPE=…`` finds them: the source's own ``controlnet-<type>/`` folders, and for the built-in model
the ControlNets shipped beside it (its canny one).

Nothing the tool did not write is ever removed or written over: the destination is built in a new hidden folder
beside it and renamed into place when complete; it must not contain, or be inside, the source; ``overwrite``
replaces only a folder an earlier ``kolors convert`` wrote (its ``kolors_convert.json`` lists every file, and the
folder holds nothing else).
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
from ..files import staging_folder, write_text
from .locate import EMBEDDED_MODEL_DIR, check_model_folder, locate_model, read_json
from .weights import find_weight_files, read_weight_file

__all__ = ["ConversionReport", "convert_model"]

WEIGHT_COMPONENTS = {"text_encoder": "model", "unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model"}
COPIED_COMPONENTS = ("scheduler", "tokenizer")
CONTROLNET_PREFIX = "controlnet-"  # controlnet-<type>/: a ControlNet that belongs to the model
MARKER = "kolors_convert.json"  # what kolors convert wrote here (the files), so that --overwrite may replace it
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
    safetensors. The destination appears only when complete; ``overwrite`` replaces one that ``kolors convert``
    wrote earlier (nothing else)."""
    src = locate_model(source)
    check_model_folder(src)
    dst = Path(destination).expanduser()
    _check_destination(src, dst, overwrite)
    controlnets = _controlnets(src)
    report = ConversionReport(folder=dst)
    with staging_folder(dst, replace=_check_replaceable if overwrite else None) as tmp:
        for name in ("model_index.json", "kolors_defaults.json", "README.md", "vocabulary.json"):
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        for component in COPIED_COMPONENTS:
            _copy_configs(src / component, tmp / component, keep_data_files=True)
        for component, stem in WEIGHT_COMPONENTS.items():
            _copy_configs(src / component, tmp / component, keep_data_files=False)
            report.components[component] = _convert_weights(src / component, tmp / component, stem, on_file)
        for kind, folder in controlnets.items():
            name = CONTROLNET_PREFIX + kind
            _copy_configs(folder, tmp / name, keep_data_files=False)
            report.components[name] = _convert_weights(folder, tmp / name, "diffusion_pytorch_model", on_file)
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        write_text(tmp / MARKER, json.dumps({"written_by": "kolors convert", "source": str(src), "files": files},
                                            indent=2, ensure_ascii=False) + "\n")
    return report


def _check_destination(src: Path, dst: Path, overwrite: bool) -> None:
    """One-line errors for a destination that is the source, holds it, lies inside it, or may not be replaced."""
    real_src, real_dst = src.resolve(), dst.resolve()
    if real_dst == real_src:
        raise KolorsError("the destination must be a different folder from the source")
    if real_dst.is_relative_to(real_src):
        raise KolorsError(f"the destination {dst} is inside the source model folder {src}: choose a folder outside it")
    if real_src.is_relative_to(real_dst):
        raise KolorsError(f"the destination {dst} contains the source model folder {src}: choose a new folder")
    for path in src.rglob("*"):  # weights linked from elsewhere (the Hugging Face cache links into its blobs/)
        if path.is_symlink() and path.resolve().is_relative_to(real_dst):
            raise KolorsError(f"the source file {path} lies inside the destination {dst}: choose a new folder")
    if dst.is_symlink():
        raise KolorsError(f"{dst} is a symbolic link: the destination must be a new folder")
    if dst.exists():
        if not dst.is_dir():
            raise KolorsError(f"{dst} is a file: the destination must be a new folder")
        if any(dst.iterdir()):
            if not overwrite:
                raise KolorsError(f"{dst} already exists: choose a new folder or pass --overwrite")
            _check_replaceable(dst)
    else:
        parent = next((p for p in dst.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise KolorsError(f"cannot create {dst}: {parent} is a file")


def _check_replaceable(folder: Path) -> None:
    """Raise unless ``folder`` is a converted model folder that holds exactly the files ``kolors convert`` wrote."""
    refuse = f"--overwrite replaces only a folder written by kolors convert; {folder} "
    marker = folder / MARKER
    if folder.is_symlink() or not marker.is_file():
        raise KolorsError(refuse + f"is not one (no {MARKER}): choose a new folder")
    try:
        written = set(json.loads(marker.read_text(encoding="utf-8"))["files"]) | {MARKER}
    except (OSError, ValueError, KeyError, TypeError):
        raise KolorsError(refuse + f"has an unreadable {MARKER}: choose a new folder") from None
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if (path.is_symlink() or not path.is_dir()) and name not in written:
            raise KolorsError(refuse + f"holds {name}, which it did not write: move it away or choose a new folder")


def _controlnets(src: Path) -> dict[str, Path]:
    """The ControlNets that belong to the model: its controlnet-<type>/ folders, and the built-in model's."""
    found = {p.name.removeprefix(CONTROLNET_PREFIX): p for p in sorted(src.glob(CONTROLNET_PREFIX + "*"))
             if (p / "config.json").is_file()}
    if src.resolve() == EMBEDDED_MODEL_DIR.resolve():
        prefix = f"{EMBEDDED_MODEL_DIR.name}-{CONTROLNET_PREFIX}"
        for folder in sorted(EMBEDDED_MODEL_DIR.parent.glob(prefix + "*")):
            if (folder / "config.json").is_file():
                found.setdefault(folder.name.removeprefix(prefix), folder)
    return found


def _copy_configs(src: Path, dst: Path, *, keep_data_files: bool) -> None:
    """Configs (and for tokenizer/scheduler every data file), never Python files or weights."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.iterdir()):
        if not path.is_file() or path.suffix == ".py":
            continue
        is_weights = path.suffix in (".bin", ".safetensors", ".pt", ".ckpt") or path.name.endswith(".index.json")
        if path.suffix == ".json" and not is_weights:
            config = read_json(path)
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
