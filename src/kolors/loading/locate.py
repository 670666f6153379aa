"""Finding the model folder: an explicit path, a Hub id in the local cache, $KOLORS_MODEL, or the built-in model."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import ModelLayoutError

EMBEDDED_MODEL_DIR = Path(__file__).resolve().parent.parent / "embedded" / "kolors-shapes-small"
MODEL_ENV_VAR = "KOLORS_MODEL"
COMPONENTS = ("scheduler", "text_encoder", "tokenizer", "unet", "vae")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def locate_model(model: str | os.PathLike | None = None) -> Path:
    """The local folder of ``model``: a path, or a Hub id already in the local Hugging Face cache.

    With ``model=None`` the ``KOLORS_MODEL`` environment variable is used, else the built-in model.
    """
    if model is None:
        model = os.environ.get(MODEL_ENV_VAR) or None
    if model is None:
        if not (EMBEDDED_MODEL_DIR / "model_index.json").is_file():
            raise ModelLayoutError(
                "the built-in model is not installed in this copy of kolors: pass --model DIR "
                f"(a Kolors folder) or set {MODEL_ENV_VAR}"
            )
        return EMBEDDED_MODEL_DIR
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLayoutError(f"--model must be a model folder, not a file: {path} (use --unet FILE for a single-file UNet)")
        return path
    if _HUB_ID.match(str(model)) and not str(model).startswith((".", "/")):
        return _from_hub_cache(str(model))
    raise ModelLayoutError(f"model folder not found: {path}")


def _from_hub_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not available offline"
        raise ModelLayoutError(
            f"'{repo_id}' is not in the local Hugging Face cache and kolors never downloads: run "
            f"`{download_command()} {repo_id}` where there is internet (or copy the folder) and pass --model DIR"
        ) from None


def download_command() -> str:
    """The download command of the installed huggingface_hub: ``hf download`` (0.34 and later), else the older
    ``huggingface-cli download``."""
    from huggingface_hub import __version__

    try:
        version = tuple(int(part) for part in __version__.split(".")[:2])
    except ValueError:
        version = (1, 0)
    return "hf download" if version >= (0, 34) else "huggingface-cli download"


def check_model_folder(folder: Path, *, skip: tuple[str, ...] = ()) -> dict:
    """The folder's ``model_index.json``, after checking that every component folder is there."""
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ModelLayoutError(f"{folder} is not a Kolors model folder: model_index.json is missing")
    index = read_json(index_path)
    for name in COMPONENTS:
        if name in skip:
            continue
        if not (folder / name).is_dir():
            raise ModelLayoutError(f"model folder {folder} is incomplete: the '{name}' component folder is missing")
    return index


def read_json(path: Path) -> dict:
    """A JSON config file (a mapping), with a one-line error naming the file when it is missing or malformed."""
    if not path.is_file():
        raise ModelLayoutError(f"missing config file: {path}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ModelLayoutError(f"cannot read config file {path}: it is nested too deeply") from None
    except (OSError, ValueError) as exc:
        raise ModelLayoutError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(config, dict):
        raise ModelLayoutError(f"config file {path} must hold a JSON object (keys and values), not a "
                               f"{type(config).__name__}: download it again")
    return config


def conventional_controlnet_folder(kind: str, model_folder: Path) -> Path | None:
    """Where a ``kind`` ControlNet is found without being named: the one shipped beside the built-in model;
    ``controlnet-<kind>`` inside the model folder (where ``kolors convert`` carries a model's ControlNets);
    ``Kolors-ControlNet-<Kind>`` beside the model folder; ``Kwai-Kolors/Kolors-ControlNet-<Kind>`` in the local
    Hugging Face cache; else None."""
    name = f"Kolors-ControlNet-{kind.title()}"
    if model_folder.resolve() == EMBEDDED_MODEL_DIR.resolve():
        shipped = EMBEDDED_MODEL_DIR.parent / f"{EMBEDDED_MODEL_DIR.name}-controlnet-{kind}"
        return shipped if (shipped / "config.json").is_file() else None
    for candidate in (model_folder / f"controlnet-{kind}", model_folder.parent / name):
        if (candidate / "config.json").is_file():
            return candidate
    try:
        return locate_model(f"Kwai-Kolors/{name}")
    except ModelLayoutError:
        return None
