"""Where the nodes find Kolors files: ComfyUI's model folders (``folder_paths``), as ComfyUI users keep them.

- whole models (either published layout): ``models/diffusers/<name>/`` (any folder holding ``model_index.json``);
- single files: ``models/unet/`` (or ``diffusion_models/``), ``models/text_encoders/`` (or ``clip/``, ``LLM/``),
  ``models/vae/``, with a model folder for the configs and the tokenizer;
- ``models/loras/`` (files), ``models/controlnet/<name>/`` (diffusers ControlNet folders),
  ``models/ipadapter/<name>/`` (Kolors-IP-Adapter-Plus / -FaceID-Plus folders), ``models/annotators/`` (MiDaS /
  DWPose weights for the depth and pose maps), ``models/insightface/`` (antelopev2, for FaceID from a photo).

Outside ComfyUI (no ``folder_paths`` module) every list is empty, so the node classes can be inspected and
called as plain Python.
"""

from __future__ import annotations

import os
from pathlib import Path

BUILTIN = "built-in (kolors-shapes-small)"  # the model shipped inside the package
BUILTIN_CANNY = "built-in canny (kolors-shapes-small)"
# Folder kinds this pack adds to ComfyUI's (name -> sub-folder of models/).
EXTRA_KINDS = {"LLM": "LLM", "ipadapter": "ipadapter", "annotators": "annotators", "insightface": "insightface"}
MAX_DEPTH = 3  # how deep model folders are looked for (e.g. diffusers/Kwai-Kolors/Kolors)


def _folder_paths():
    try:
        import folder_paths
    except ImportError:  # not inside ComfyUI
        return None
    return folder_paths


def register() -> None:
    """Add this pack's model folder kinds to ComfyUI's (an extra_model_paths.yaml can add more places)."""
    fp = _folder_paths()
    if fp is None:
        return
    for kind, sub in EXTRA_KINDS.items():
        if kind not in fp.folder_names_and_paths:
            fp.folder_names_and_paths[kind] = ([os.path.join(fp.models_dir, sub)], set(fp.supported_pt_extensions))


def roots(kind: str) -> list[Path]:
    """ComfyUI's folders of ``kind`` (e.g. "diffusers", "controlnet")."""
    fp = _folder_paths()
    if fp is None or kind not in fp.folder_names_and_paths:
        return []
    return [Path(p) for p in fp.get_folder_paths(kind)]


def files(*kinds: str) -> list[str]:
    """The weight files ComfyUI lists for ``kinds``, by their names relative to the kind's folders."""
    fp = _folder_paths()
    if fp is None:
        return []
    names: list[str] = []
    for kind in kinds:
        if kind in fp.folder_names_and_paths:
            names += [n for n in fp.get_filename_list(kind) if n not in names]
    return names


def file_path(name: str, *kinds: str) -> Path | None:
    """The full path of a file listed by :func:`files`."""
    fp = _folder_paths()
    for kind in kinds:
        if fp is not None and kind in fp.folder_names_and_paths:
            found = fp.get_full_path(kind, name)
            if found:
                return Path(found)
    return None


def folders(kind: str, *markers: str) -> list[str]:
    """Sub-folders (up to MAX_DEPTH deep, names relative to the kind's folders, with '/') that hold one of the
    ``markers`` files; a found folder is not searched further."""
    found: list[str] = []
    for root in roots(kind):
        if not root.is_dir():
            continue
        for current, subdirs, names in os.walk(root, followlinks=True):
            depth = len(Path(current).relative_to(root).parts)
            if depth and any(m in names for m in markers):
                found.append(Path(current).relative_to(root).as_posix())
                subdirs.clear()
            elif depth >= MAX_DEPTH:
                subdirs.clear()
            subdirs.sort()
    return sorted(dict.fromkeys(found))


def folder_path(kind: str, name: str) -> Path | None:
    """The full path of a folder listed by :func:`folders`."""
    for root in roots(kind):
        candidate = root / name
        if candidate.is_dir():
            return candidate
    return None


def first_root(kind: str) -> Path | None:
    """The first folder of ``kind`` (where users are told to put files), or None outside ComfyUI."""
    found = roots(kind)
    return found[0] if found else None
