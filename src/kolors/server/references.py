"""API JSON -> :class:`~kolors.request.GenerationRequest`, with everything that names a file resolved safely.

A request never carries a path. Images are ``"upload:<id>"`` (an uploaded image) or ``"job:<id>/<index>"`` (a
result); LoRAs are ``{"name": "<file in --lora-dir>", "weight": w}``; a control's ``controlnet``, an IP-Adapter's
and a FaceID adapter's ``model`` are folder names inside the configured folders. A name is one path component,
must exist in its folder (symbolic links leading out of it are refused) and hold safetensors weights only.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError
from ..request import GenerationRequest
from .settings import ServerSettings
from .storage import Storage
from .uploads import Uploads

_UPLOAD = re.compile(r"upload:(up_[0-9a-f]{8,40})")
_RESULT = re.compile(r"job:(job_[0-9a-f]{8,40})/(\d{1,4})")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _fail(message: str, param: str | None = None) -> InvalidParameterError:
    error = InvalidParameterError(message)
    error.param = param  # type: ignore[attr-defined]
    return error


class References:
    def __init__(self, settings: ServerSettings, storage: Storage, uploads: Uploads) -> None:
        self.settings = settings
        self.storage = storage
        self.uploads = uploads

    # --- the request ------------------------------------------------------------------------------------------
    def request(self, data: Any) -> GenerationRequest:
        """The checked request ``data`` describes (raises InvalidParameterError naming the field)."""
        if not isinstance(data, dict):
            raise _fail(f"the request must be a JSON object with a prompt, got {type(data).__name__}")
        data = dict(data)
        for key in ("init_image", "mask"):
            if data.get(key) is not None:
                data[key] = self.image(data[key], key)
        if data.get("controls") is not None:
            data["controls"] = [self._control(c, i) for i, c in enumerate(_list(data["controls"], "controls"))]
        if data.get("loras") is not None:
            data["loras"] = [self._lora(x, i) for i, x in enumerate(_list(data["loras"], "loras"))]
        if data.get("ip_adapter") is not None:
            data["ip_adapter"] = self._image_prompt(data["ip_adapter"], "ip_adapter", "image",
                                                    self.settings.ip_adapter_dir, "--ip-adapter-dir")
        if data.get("face_id") is not None:
            data["face_id"] = self._image_prompt(data["face_id"], "face_id", "face", self.settings.face_id_dir,
                                                 "--face-id-dir")
        request = GenerationRequest.from_dict(data, strict=True)
        request.validate()
        self._check_limits(request)
        return request

    def _check_limits(self, request: GenerationRequest) -> None:
        limits = self.settings.limits
        if request.width is not None and request.height is not None and \
                request.width * request.height > limits.max_pixels:
            raise _fail(f"{request.width}x{request.height} is more than this server's limit of {limits.max_pixels} "
                        "pixels per image: ask for a smaller size", "size")
        if request.steps is not None and request.steps > limits.max_steps:
            raise _fail(f"steps must be at most {limits.max_steps} on this server, got {request.steps}", "steps")
        if request.num_images > limits.max_images:
            raise _fail(f"at most {limits.max_images} images per request on this server, got {request.num_images}",
                        "n")
        chars = len(request.prompt) + len(request.negative_prompt or "")
        if chars > limits.max_prompt_chars:
            raise _fail(f"the prompts are {chars} characters long, more than this server's limit of "
                        f"{limits.max_prompt_chars} (the model reads 256 tokens): shorten them", "prompt")

    # --- names and references ---------------------------------------------------------------------------------
    def image(self, value: Any, field: str) -> str:
        """The file an image reference names."""
        if not isinstance(value, str):
            raise _fail(f"{field} must be \"upload:<id>\" or \"job:<id>/<index>\", got {type(value).__name__}", field)
        match = _UPLOAD.fullmatch(value)
        if match:
            path = self.uploads.path(match[1])
            if path is None:
                raise _fail(f"{field}: no upload {match[1]} (upload it again with POST /api/v1/uploads)", field)
            return str(path)
        match = _RESULT.fullmatch(value)
        if match:
            path = self.storage.result_path(match[1], int(match[2]))
            if not path.is_file():
                raise _fail(f"{field}: job {match[1]} has no image {match[2]} (unknown job, not finished, or "
                            "removed by retention)", field)
            return str(path)
        raise _fail(f"{field} must be \"upload:<id>\" (POST /api/v1/uploads first) or \"job:<id>/<index>\", "
                    f"got {value[:60]!r}", field)

    def adapter(self, folder: Path | None, name: Any, what: str, option: str, file: bool = False) -> Path:
        """``name`` inside ``folder``: one path component, existing, safetensors weights only."""
        if folder is None:
            raise _fail(f"this server has no {what} folder: start it with {option} DIR", what)
        if not isinstance(name, str) or not name:
            raise _fail(f"a {what} is named by a {'file' if file else 'folder'} name in the server's {what} folder, "
                        f"got {name!r}", what)
        if "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
            raise _fail(f"{what} name {name[:80]!r} must be a plain name from the server's {what} folder (no paths)",
                        what)
        if file and not name.endswith(".safetensors"):
            name += ".safetensors"
        root = folder.resolve()
        path = root / name
        if not path.exists():
            known = ", ".join(self.names(folder, file)[:10]) or "none"
            raise _fail(f"unknown {what} '{name}': this server has {known}", what)
        if path.resolve().parent != root:
            raise _fail(f"{what} '{name}' leads outside the server's {what} folder", what)
        if file and not path.is_file():
            raise _fail(f"{what} '{name}' is not a file", what)
        if not file:
            if not path.is_dir():
                raise _fail(f"{what} '{name}' is not a folder", what)
            files = [p for p in path.rglob("*") if p.is_file()]
            if any(p.suffix.lower() in PICKLE_SUFFIXES for p in files):
                raise _fail(f"{what} '{name}' holds pickle weights: this server loads safetensors only "
                            "(convert the folder's weights to .safetensors)", what)
            if not any(p.suffix == ".safetensors" for p in files):
                raise _fail(f"{what} '{name}' holds no .safetensors weights", what)
        return path

    @staticmethod
    def names(folder: Path | None, files: bool) -> list[str]:
        """The adapter names a folder offers (its .safetensors files, or its sub-folders)."""
        if folder is None or not folder.is_dir():
            return []
        if files:
            return sorted(p.name for p in folder.glob("*.safetensors") if p.is_file())
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _lora(self, value: Any, index: int) -> dict[str, Any]:
        if not isinstance(value, dict) or "path" in value or "name" not in value:
            raise _fail(f"loras[{index}] must be {{\"name\": \"<file in the server's LoRA folder>\", \"weight\": w}}",
                        "loras")
        unknown = sorted(set(value) - {"name", "weight"})
        if unknown:
            raise _fail(f"loras[{index}]: unknown setting '{unknown[0]}' (use name, weight)", "loras")
        path = self.adapter(self.settings.lora_dir, value["name"], "LoRA", "--lora-dir", file=True)
        return {"path": str(path), "weight": value.get("weight", 1.0)}

    def _control(self, value: Any, index: int) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _fail(f"controls[{index}] must be an object with a type and an image", "controls")
        value = dict(value)
        if value.get("image") is not None:
            value["image"] = self.image(value["image"], f"controls[{index}].image")
        if value.get("controlnet") is not None:
            value["controlnet"] = str(self.adapter(self.settings.controlnet_dir, value["controlnet"], "ControlNet",
                                                   "--controlnet-dir"))
        return value

    def _image_prompt(self, value: Any, field: str, image_key: str, folder: Path | None,
                      option: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _fail(f"{field} must be an object with a model and an {image_key}", field)
        value = dict(value)
        for key in (image_key, "image"):
            if value.get(key) is not None:
                value[key] = self.image(value[key], f"{field}.{key}")
        value["model"] = str(self.adapter(folder, value.get("model"), field.replace("_", "-"), option))
        return value


def batch_key(request: GenerationRequest) -> str:
    """A short text equal for requests that can be denoised together (GenerationRequest.batch_key)."""
    return hashlib.sha256(json.dumps(request.batch_key(), default=str).encode()).hexdigest()


def _list(value: Any, name: str) -> list:
    if not isinstance(value, list):
        raise _fail(f"{name} must be a list, got {type(value).__name__}", name)
    return value
