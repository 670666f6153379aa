"""LoRA adapters on a loaded Kolors pipeline: load several, weight each, fuse, unload exactly.

The LoRA layers are peft's (``inject_adapter_in_model`` + ``set_peft_model_state_dict``) on the pipeline's
UNet and, when the file has text-encoder tensors, its ChatGLM3 text encoder. The functions take any object
with a ``components`` attribute holding ``unet`` and ``text_encoder`` (every kolors pipeline), or the
``KolorsComponents`` themselves.

File formats read (tensor names; each LoRA layer is a down/up pair plus an optional ``alpha``):

* diffusers / peft: ``unet.<module>.lora_A.weight`` / ``lora_B.weight``, ``<module>.lora.down.weight`` /
  ``lora.up.weight``, the older attention-processor names (``…attn1.processor.to_q_lora.down.weight``) and
  ``lora_linear_layer`` names, with ``unet.`` / ``text_encoder.`` prefixes or none. The LoraConfig that
  diffusers stores in the safetensors header (``lora_adapter_metadata``) gives ``lora_alpha``.
* kohya-ss: ``lora_unet_<module with _>.lora_down.weight`` / ``lora_up.weight`` / ``.alpha`` and
  ``lora_te_…`` / ``lora_te1_…`` for the text encoder; the module names may be the diffusers UNet's (how
  Kolors LoRAs are trained) or SDXL's original ones (``lora_unet_input_blocks_4_1_…``, converted with diffusers'
  ``lora_conversion_utils``).
* the official Kolors DreamBooth output: ``pytorch_lora_weights.safetensors`` (UNet ``to_q/to_k/to_v/to_out.0``)
  and, when the text encoder was trained, peft's ``adapter_model.safetensors`` (``base_model.model.encoder…
  query_key_value.lora_A.weight``, alpha in ``adapter_config.json`` beside it). Pass either file, or the
  checkpoint folder to load both as one LoRA.

The scale of a layer is ``weight * alpha / rank`` (``alpha`` defaults to the rank), as in peft, diffusers and
kohya-ss. Only ``.safetensors`` is read unless ``allow_pickle=True`` (then with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import struct
import warnings
import weakref
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidParameterError, KolorsError
from ..loading.weights import read_weight_file

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
COMPONENTS = ("unet", "text_encoder")
# Files of a Kolors DreamBooth checkpoint folder: the diffusers UNet LoRA and peft's text-encoder adapter.
DREAMBOOTH_FILES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")
PEFT_ADAPTER_CONFIG = "adapter_config.json"
LORA_METADATA_KEY = "lora_adapter_metadata"  # where diffusers' save_lora_weights stores the LoraConfig
# Header fields in which kohya-ss and the ModelSpec convention name the base model a LoRA was trained on.
BASE_MODEL_METADATA_KEYS = ("ss_base_model_version", "modelspec.architecture")

_UNSUPPORTED = {  # tensor-name fragments of adapter kinds that are not plain LoRA
    "hada_": "LoHa", "lokr_": "LoKr", "dora_scale": "DoRA", "lora_magnitude_vector": "DoRA",
    "oft_": "OFT", ".diff": "full-difference", ".diff_b": "full-difference", "lora_mid": "LoCon (Tucker)",
}
_KOHYA_PREFIXES = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder",
                   "lora_te2_": None}  # lora_te2_: SDXL's second CLIP text encoder, which Kolors does not have
_PREFIXES = {"unet.": "unet", "text_encoder.": "text_encoder", "text_encoder_2.": None}
_PEFT_MODEL_PREFIX = "base_model.model."  # peft's PeftModel.save_pretrained
_CHATGLM_PREFIX = "transformer."  # the original ChatGLM3 checkpoint's module prefix
_ADAPTER_IN_NAME = re.compile(r"\.lora_([AB])\.[^.]+\.weight$")  # <m>.lora_A.<adapter>.weight (raw state dict)


@dataclass
class LoadedLora:
    """One LoRA loaded into a pipeline."""

    name: str  # the adapter name, used by set_lora_weights / unload_lora
    path: Path
    weight: float
    sha256: str  # of the file (of the files, in name order, for a DreamBooth folder)
    layers: dict[str, int]  # LoRA layers per component, e.g. {"unet": 140, "text_encoder": 28}
    addnet_hash: str | None = None  # sha256 of the tensor bytes after the safetensors header (A1111's LoRA hash)

    def parameters(self) -> dict[str, Any]:
        """The JSON-serialisable record of this LoRA for the generation parameters."""
        return {"name": self.name, "file": self.path.name, "weight": self.weight, "sha256": self.sha256[:10]}


@dataclass
class _LoraState:
    loras: dict[str, LoadedLora] = field(default_factory=dict)
    fused: bool = False
    originals: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)  # pre-fusion weights (CPU)


_STATES: weakref.WeakKeyDictionary[torch.nn.Module, _LoraState] = weakref.WeakKeyDictionary()


# --- public API ------------------------------------------------------------------------------------------------
def load_lora(pipe: Any, path: str | Path, weight: float = 1.0, name: str | None = None, *,
              allow_pickle: bool = False) -> str:
    """Load the LoRA in ``path`` into ``pipe`` at ``weight`` and return its adapter name.

    ``name`` defaults to the file name without its extension (made unique). Several LoRAs can be loaded;
    their effects add up. Raises KolorsError when the file is missing, unreadable, not a LoRA, or made for a
    different base model (its layers do not exist in this model or have other shapes).
    """
    weight = _check_weight(weight)
    _require_peft()
    models = _models(pipe)
    state = _state(models)
    path = Path(path).expanduser()
    name = _adapter_name(name, path, state)
    state_dict, config = _read_lora(path, allow_pickle)
    layers = _parse_layers(state_dict, config, models, path)

    record = LoadedLora(name=name, path=path, weight=weight, sha256=_file_sha256(path),
                        layers={c: len(e) for c, e in layers.items()}, addnet_hash=_addnet_hash(path))
    was_fused = state.fused
    if was_fused:
        _unfuse(models, state)
    try:
        for component, entries in layers.items():
            _inject(models[component], entries, name)
    except Exception:
        _remove_adapter(models, name)
        raise
    else:
        state.loras[name] = record
    finally:
        _activate(models, state)
        if was_fused:
            _fuse(models, state)
    return name


def set_lora_weights(pipe: Any, weights: Mapping[str, float]) -> None:
    """Set the weight of loaded LoRAs by name (others keep theirs); 0 switches a LoRA off."""
    models = _models(pipe)
    state = _state(models)
    unknown = [n for n in weights if n not in state.loras]
    if unknown:
        raise KolorsError(f"no LoRA named '{unknown[0]}' is loaded (loaded: {_names(state)})")
    checked = {n: _check_weight(w) for n, w in weights.items()}
    was_fused = state.fused
    if was_fused:
        _unfuse(models, state)
    for n, w in checked.items():
        state.loras[n].weight = w
    _activate(models, state)
    if was_fused:
        _fuse(models, state)


def fuse_lora(pipe: Any) -> None:
    """Merge the loaded LoRAs, at their current weights, into the model weights (faster generation).

    The original weights are kept in CPU memory so that ``unfuse_lora`` and ``unload_lora`` restore them
    exactly. Changing weights or loading another LoRA while fused re-fuses automatically.
    """
    models = _models(pipe)
    state = _state(models)
    if not state.fused:
        _fuse(models, state)


def unfuse_lora(pipe: Any) -> None:
    """Undo ``fuse_lora``: the model weights are the original ones again, the LoRAs stay loaded."""
    models = _models(pipe)
    state = _state(models)
    if state.fused:
        _unfuse(models, state)


def unload_lora(pipe: Any, name: str | None = None) -> None:
    """Remove the LoRA called ``name`` (all LoRAs when None); the model is exactly as before it was loaded."""
    models = _models(pipe)
    state = _state(models)
    if name is not None and name not in state.loras:
        raise KolorsError(f"no LoRA named '{name}' is loaded (loaded: {_names(state)})")
    names = list(state.loras) if name is None else [name]
    was_fused = state.fused
    if was_fused:
        _unfuse(models, state)
    for n in names:
        _remove_adapter(models, n)
        del state.loras[n]
    _activate(models, state)
    if was_fused and state.loras:
        _fuse(models, state)
    elif not state.loras:
        state.fused = False


def loaded_loras(pipe: Any) -> list[LoadedLora]:
    """The LoRAs loaded into ``pipe``, in load order."""
    return list(_state(_models(pipe)).loras.values())


def lora_parameters(pipe: Any) -> list[dict[str, Any]]:
    """``[{"name", "file", "weight", "sha256"}]`` for the generation parameters (empty without LoRAs).

    LoRAs at weight 0 are left out: they do not change the image.
    """
    return [lora.parameters() for lora in loaded_loras(pipe) if lora.weight != 0]


def a1111_lora_hashes(pipe: Any) -> str | None:
    """The value of A1111's ``Lora hashes`` field (``"name: hash, …"``), or None without LoRAs."""
    parts = [f"{re.sub('[:,]', '', lora.name)}: {(lora.addnet_hash or lora.sha256)[:12]}"
             for lora in loaded_loras(pipe) if lora.weight != 0]
    return ", ".join(parts) or None


def parse_lora_spec(spec: str) -> tuple[str, float]:
    """``FILE[:WEIGHT]`` (the CLI's ``--lora``) as ``(file, weight)``; the weight defaults to 1."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", tail.strip()):
        return head, _check_weight(float(tail))
    return spec, 1.0


# --- reading files ---------------------------------------------------------------------------------------------
def _read_lora(path: Path, allow_pickle: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """All tensors of a LoRA file (or DreamBooth folder) and the LoraConfig values found beside them."""
    if path.is_dir():
        files = [path / f for f in DREAMBOOTH_FILES if (path / f).is_file()]
        if not files:
            raise KolorsError(f"LoRA folder {path} holds no {' or '.join(DREAMBOOTH_FILES)}: pass the LoRA file")
    elif path.is_file():
        files = [path]
    else:
        raise KolorsError(f"LoRA file not found: {path}")

    state: dict[str, torch.Tensor] = {}
    config: dict[str, Any] = {}
    for file in files:
        tensors = _read_file(file, allow_pickle)
        if any(k.startswith(_PEFT_MODEL_PREFIX) for k in tensors):
            config.update(_peft_adapter_config(file))
        if file.suffix == SAFETENSORS_SUFFIX:
            config.update(_header_config(file))
        state.update(tensors)
    return state, config


def _read_file(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise KolorsError(
            f"LoRA file {path} is a pickle ({suffix}), which can run code when read: use a .safetensors file, "
            "or pass allow_pickle=True if you trust it"
        )
    if suffix != SAFETENSORS_SUFFIX and suffix not in PICKLE_SUFFIXES:
        raise KolorsError(f"LoRA file {path} is not a .safetensors file")
    state = read_weight_file(path)  # ModelLayoutError (a KolorsError) naming the file when unreadable
    if not state:
        raise KolorsError(f"LoRA file {path} holds no tensors")
    return state


def _header_config(path: Path) -> dict[str, Any]:
    """The LoraConfig values diffusers stores in the safetensors header, keyed ``<component>.<field>``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        base = " ".join(str(header.get(k, "")) for k in BASE_MODEL_METADATA_KEYS).lower()
        if base.strip() and "kolors" not in base and re.search(r"sdxl|stable-diffusion|sd_v|flux|sd3", base):
            logger.warning("LoRA %s says it was trained on %s, not Kolors: its effect may be wrong", path.name,
                           base.strip())
        raw = header.get(LORA_METADATA_KEY)
        data = json.loads(raw) if raw else {}
    except Exception:  # noqa: BLE001 - a malformed header is only a missing hint here
        logger.warning("ignoring unreadable %s in the header of %s", LORA_METADATA_KEY, path)
        return {}
    if not isinstance(data, dict):
        return {}
    if not any(k.startswith(tuple(f"{c}." for c in COMPONENTS)) for k in data):  # one model's config, unprefixed
        data = {f"*.{k}": v for k, v in data.items()}
    return data


def _peft_adapter_config(file: Path) -> dict[str, Any]:
    """peft's ``adapter_config.json`` beside ``file``, keyed ``peft.<field>`` (it describes base_model.model.*)."""
    config_path = file.parent / PEFT_ADAPTER_CONFIG
    if not config_path.is_file():
        return {}
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KolorsError(f"cannot read {config_path}: {exc}") from None
    return {f"peft.{k}": v for k, v in data.items()} if isinstance(data, dict) else {}


def _file_sha256(path: Path) -> str:
    files = [path / f for f in DREAMBOOTH_FILES if (path / f).is_file()] if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _addnet_hash(path: Path) -> str | None:
    """sha256 of a safetensors file's tensor bytes (after the header), the hash A1111 shows for LoRAs."""
    if path.is_dir() or path.suffix != SAFETENSORS_SUFFIX:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + header_len)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- key formats -> {component: {module: (down, up, alpha)}} ---------------------------------------------------
@dataclass
class _Layer:
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None
    source: str = ""  # a tensor name from the file, for messages
    config_key: str = "*"  # which header/adapter config describes it


def _parse_layers(state: dict[str, torch.Tensor], config: dict[str, Any], models: dict[str, torch.nn.Module],
                  path: Path) -> dict[str, dict[str, _Layer]]:
    """The file's LoRA layers by component and module name, checked against the model's modules."""
    for key in state:
        for fragment, kind in _UNSUPPORTED.items():
            if fragment in key:
                raise KolorsError(f"LoRA file {path} is a {kind} adapter ({key}): only plain LoRA is supported")

    targets = {c: _target_modules(m) for c, m in models.items()}
    layers: dict[tuple[str | None, str], _Layer] = {}
    foreign: list[str] = []  # tensors of models Kolors does not have (SDXL's second text encoder, CLIP, …)
    unrecognised: list[str] = []

    kohya = {k: v for k, v in state.items() if k.startswith(tuple(_KOHYA_PREFIXES))}
    for (component, module, source), role, tensor in _kohya_names(kohya, targets, models):
        _add(layers, component, module, role, tensor, source, "*")
    rest = {k: v for k, v in state.items() if k not in kohya}
    for key, (renamed, tensor) in _diffusers_names(rest).items():
        component, module, role, config_key = _split_name(renamed, targets)
        if role is None:
            unrecognised.append(key)
        elif component is False:
            foreign.append(key)
        else:
            _add(layers, component, module, role, tensor, key, config_key)
    if unrecognised:
        raise KolorsError(
            f"{path} is not a LoRA file kolors can read: tensor '{unrecognised[0]}' is not a LoRA down/up/alpha "
            f"tensor ({len(unrecognised)} such tensors)"
        )

    result: dict[str, dict[str, _Layer]] = {}
    mismatched: list[str] = []
    missing: list[str] = list(foreign)
    for (component, module), layer in layers.items():
        if layer.down is None or layer.up is None:
            raise KolorsError(f"LoRA file {path} is incomplete: layer {module} has no "
                              f"{'down' if layer.down is None else 'up'} tensor")
        if component is None:
            missing.append(layer.source)
            continue
        base = targets[component][module]
        problem = _fit(layer, base)
        if problem:
            mismatched.append(f"{layer.source}: {problem}")
            continue
        layer.alpha = _alpha(layer, module, component, config)
        result.setdefault(component, {})[module] = layer

    total = len(layers) + len(foreign)
    if not result or missing or mismatched:
        raise KolorsError(_mismatch_message(path, total, missing, mismatched, state))
    return result


def _kohya_names(state: dict[str, torch.Tensor], targets: dict[str, dict[str, torch.nn.Module]],
                 models: dict[str, torch.nn.Module]):
    """``((component, module, source), role, tensor)`` for kohya-ss names (``lora_unet_…``, ``lora_te_…``)."""
    by_underscore = {c: {name.replace(".", "_"): name for name in t} for c, t in targets.items()}
    resolved: dict[str, tuple[str | None, str | None]] = {}
    unet_fallback: list[str] = []
    for key in state:
        base = key.split(".", 1)[0]
        if base in resolved:
            continue
        prefix = next(p for p in _KOHYA_PREFIXES if base.startswith(p))
        component = _KOHYA_PREFIXES[prefix]
        if component is None:
            resolved[base] = (None, None)
            continue
        flat = base[len(prefix):]
        table = by_underscore[component]
        module = table.get(flat)
        if module is None and component == "text_encoder" and flat.startswith("transformer_"):
            module = table.get(flat[len("transformer_"):])
        if module is None and component == "unet":
            unet_fallback.append(base)
        resolved[base] = (component, module)
    if unet_fallback:  # SDXL-original (sgm) block names, or other spellings diffusers knows
        for base, module in _diffusers_kohya_unet_names(unet_fallback, models["unet"]).items():
            if module in targets["unet"]:
                resolved[base] = ("unet", module)

    for key, tensor in state.items():
        base, _, suffix = key.partition(".")
        component, module = resolved[base]
        role = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}.get(suffix)
        if role is None:
            raise KolorsError(f"unrecognised kohya LoRA tensor '{key}'")
        if module is None:  # no such layer in this model
            component, module = None, base
        yield (component, module, key), role, tensor


def _diffusers_kohya_unet_names(bases: list[str], unet: torch.nn.Module) -> dict[str, str]:
    """kohya UNet layer names -> diffusers module names, with diffusers' own LoRA conversion utilities."""
    from diffusers.loaders.lora_conversion_utils import _convert_unet_lora_key, _maybe_map_sgm_blocks_to_diffusers
    from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft

    names = {f"{b}.lora_down.weight": b for b in bases}
    try:
        mapped = _maybe_map_sgm_blocks_to_diffusers(dict(names), unet.config)
    except (ValueError, IndexError, KeyError, AttributeError):
        return {}
    result = {}
    for key, base in mapped.items():
        try:
            diffusers_key = _convert_unet_lora_key(key)
        except (ValueError, IndexError):
            continue
        peft_key = next(iter(convert_unet_state_dict_to_peft({diffusers_key: None})))
        if ".lora_A." in peft_key:
            result[base] = peft_key.split(".lora_A.")[0]
    return result


def _diffusers_names(state: dict[str, torch.Tensor]) -> dict[str, tuple[str, torch.Tensor]]:
    """diffusers/peft tensor names in peft's spelling (``<module>.lora_A.weight``), with diffusers' mappings."""
    from diffusers.utils.state_dict_utils import (
        DIFFUSERS_TO_PEFT,
        convert_state_dict,
        convert_unet_state_dict_to_peft,
    )

    names = {k: k for k in state}
    names = convert_unet_state_dict_to_peft(names)  # .processor.to_q_lora.down, .lora.down/.up
    names = convert_state_dict(names, DIFFUSERS_TO_PEFT)  # .lora_linear_layer.down/.up
    renamed = {}
    for new, old in names.items():
        renamed[old] = (_ADAPTER_IN_NAME.sub(r".lora_\1.weight", new), state[old])
    return renamed


def _split_name(name: str, targets: dict[str, dict[str, torch.nn.Module]]):
    """``(component, module, role, config_key)``; component None: no such module, False: another model's."""
    if name.endswith(".lora_A.weight"):
        module, role = name[: -len(".lora_A.weight")], "down"
    elif name.endswith(".lora_B.weight"):
        module, role = name[: -len(".lora_B.weight")], "up"
    elif name.endswith(".alpha"):
        module, role = name[: -len(".alpha")], "alpha"
    else:
        return None, name, None, "*"
    component: str | None = None
    config_key = "*"
    for prefix, comp in _PREFIXES.items():
        if module.startswith(prefix):
            if comp is None:
                return False, module, role, "*"
            component, module, config_key = comp, module[len(prefix):], comp
            break
    else:
        if module.startswith(_PEFT_MODEL_PREFIX):
            module, config_key = module[len(_PEFT_MODEL_PREFIX):], "peft"
    candidates = [component] if component else list(COMPONENTS)
    for comp in candidates:
        for candidate in (module, module.removeprefix(_CHATGLM_PREFIX)):
            if candidate in targets[comp]:
                return comp, candidate, role, config_key
    if module.startswith("text_model.") or ".self_attn." in module:  # CLIP text encoder (SD 1.5 / SDXL)
        return False, module, role, config_key
    return None, module, role, config_key


def _add(layers: dict, component: str | None, module: str, role: str, tensor: torch.Tensor, source: str,
         config_key: str) -> None:
    layer = layers.setdefault((component, module), _Layer(source=source, config_key=config_key))
    if role == "alpha":
        layer.alpha = float(tensor.float().item())
    else:
        setattr(layer, role, tensor)
        if layer.source.endswith(".alpha"):
            layer.source = source


def _target_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Layers LoRA can adapt (Linear, Conv2d) by name -> the original layer (inside peft's wrapper if any)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    targets = {}
    for name, module in model.named_modules():
        parts = name.split(".")
        if "base_layer" in parts or any(p.startswith("lora_") for p in parts):
            continue
        if isinstance(module, BaseTunerLayer):
            targets[name] = module.get_base_layer()
        elif isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            targets[name] = module
    return targets


def _fit(layer: _Layer, base: torch.nn.Module) -> str | None:
    """Reshape the pair to what peft expects for ``base``; a description of the mismatch when it cannot."""
    down, up = layer.down, layer.up
    if down.ndim not in (2, 4) or up.ndim not in (2, 4) or down.shape[0] != up.shape[1]:
        return f"down {tuple(down.shape)} and up {tuple(up.shape)} are not a LoRA pair"
    rank = down.shape[0]
    if isinstance(base, torch.nn.Linear):
        want_down, want_up = (rank, base.in_features), (base.out_features, rank)
    else:
        kernel = tuple(base.kernel_size)
        want_down, want_up = (rank, base.in_channels, *kernel), (base.out_channels, rank, 1, 1)
        if down.ndim == 2 and kernel == (1, 1):
            down = down[:, :, None, None]
        if up.ndim == 2:
            up = up[:, :, None, None]
    if isinstance(base, torch.nn.Linear) and down.ndim == 4 and down.shape[2:] == (1, 1):
        down = down.flatten(1)
    if isinstance(base, torch.nn.Linear) and up.ndim == 4 and up.shape[2:] == (1, 1):
        up = up.flatten(1)
    if tuple(down.shape) != want_down or tuple(up.shape) != want_up:
        return (f"shapes {tuple(layer.down.shape)}/{tuple(layer.up.shape)} do not fit a layer of weight "
                f"{tuple(base.weight.shape)}")
    layer.down, layer.up = down, up
    return None


def _alpha(layer: _Layer, module: str, component: str, config: dict[str, Any]) -> float:
    """The layer's alpha: its own ``.alpha`` tensor, else the stored LoraConfig's, else its rank (scale 1)."""
    rank = layer.down.shape[0]
    if layer.alpha is not None:
        return layer.alpha
    prefix = {"peft": "peft", "*": component}.get(layer.config_key, layer.config_key)
    values = {k.split(".", 1)[1]: v for k, v in config.items() if k.split(".", 1)[0] in (prefix, "*")}
    alpha = values.get("lora_alpha")
    for pattern, value in (values.get("alpha_pattern") or {}).items():
        try:
            if re.match(rf"(.*\.)?({pattern})$", module):
                alpha = value
                break
        except re.error:
            continue
    if alpha is None:
        return float(rank)
    alpha = float(alpha)
    if values.get("use_rslora"):
        alpha *= math.sqrt(rank)  # peft's rsLoRA scale alpha/sqrt(r), written as an alpha for alpha/r
    return alpha


def _mismatch_message(path: Path, total: int, missing: list[str], mismatched: list[str],
                      state: Mapping[str, torch.Tensor]) -> str:
    hint = ""
    keys = list(state)
    if any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in keys):
        hint = " (it has SDXL's second text encoder: an SDXL LoRA)"
    elif any("text_model" in k or "self_attn" in k for k in keys):
        hint = " (its text-encoder layers are CLIP's, as in SD 1.5 / SDXL LoRAs)"
    if missing:
        detail = f"{len(missing)} of its {total} layers do not exist in this model (e.g. {missing[0]})"
    else:
        detail = f"{len(mismatched)} of its {total} layers do not fit this model (e.g. {mismatched[0]})"
    return (f"LoRA {path.name} is for a different base model{hint}: {detail}; use a LoRA trained for Kolors")


# --- peft layers -----------------------------------------------------------------------------------------------
def _inject(model: torch.nn.Module, entries: dict[str, _Layer], name: str) -> None:
    """Add adapter ``name`` to the ``entries`` modules of ``model`` with the file's tensors."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    ranks = {m: layer.down.shape[0] for m, layer in entries.items()}
    alphas = {m: layer.alpha for m, layer in entries.items()}
    rank = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    config = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=sorted(entries),
        rank_pattern={re.escape(m): r for m, r in ranks.items() if r != rank},
        alpha_pattern={re.escape(m): a for m, a in alphas.items() if a != alpha},
    )
    targets = _target_modules(model)
    tensors = {}
    for module, layer in entries.items():
        weight = targets[module].weight
        tensors[f"{module}.lora_A.weight"] = layer.down.to(device=weight.device, dtype=weight.dtype).contiguous()
        tensors[f"{module}.lora_B.weight"] = layer.up.to(device=weight.device, dtype=weight.dtype).contiguous()
    with warnings.catch_warnings():  # several adapters in one model is what we want
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        inject_adapter_in_model(config, model, adapter_name=name, low_cpu_mem_usage=True)
    result = set_peft_model_state_dict(model, tensors, adapter_name=name, low_cpu_mem_usage=True)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) or [] if "lora_" in k]
    if unexpected:
        raise KolorsError(f"LoRA tensor {unexpected[0]} was not loaded into the model")


def _tuner_layers(model: torch.nn.Module):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]


def _activate(models: dict[str, torch.nn.Module], state: _LoraState) -> None:
    """Make every loaded LoRA active in every layer it has, at its weight, with no gradients."""
    names = list(state.loras)
    for model in models.values():
        for _, module in _tuner_layers(model):
            module.set_adapter(names, inference_mode=True)
            for name in names:
                module.set_scale(name, state.loras[name].weight)


def _fuse(models: dict[str, torch.nn.Module], state: _LoraState) -> None:
    for component, model in models.items():
        for module_name, module in _tuner_layers(model):
            adapters = [n for n in state.loras if n in module.lora_A]
            if not adapters:
                continue
            base = module.get_base_layer()
            state.originals[(component, module_name)] = base.weight.detach().to("cpu", copy=True)
            module.merge(adapter_names=adapters)
    state.fused = True


def _unfuse(models: dict[str, torch.nn.Module], state: _LoraState) -> None:
    for component, model in models.items():
        for module_name, module in _tuner_layers(model):
            original = state.originals.pop((component, module_name), None)
            if original is None:
                continue
            module.unmerge()
            with torch.no_grad():
                module.get_base_layer().weight.copy_(original)  # bit-exact, whatever unmerge's rounding
    state.originals.clear()
    state.fused = False


def _remove_adapter(models: dict[str, torch.nn.Module], name: str) -> None:
    """Delete adapter ``name``; layers left without adapters become the original modules again."""
    for model in models.values():
        for module_name, module in _tuner_layers(model):
            if name in module.lora_A:
                module.delete_adapter(name)
            if not module.lora_A:
                parent_name, _, child = module_name.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                setattr(parent, child, module.get_base_layer())
        configs = model.__dict__.get("peft_config")
        if isinstance(configs, dict):
            configs.pop(name, None)
        if not _tuner_layers(model):
            for attr in ("peft_config", "_hf_peft_config_loaded"):
                if attr in model.__dict__:
                    delattr(model, attr)


# --- helpers ---------------------------------------------------------------------------------------------------
def _models(pipe: Any) -> dict[str, torch.nn.Module]:
    components = getattr(pipe, "components", pipe)
    try:
        return {c: getattr(components, c) for c in COMPONENTS}
    except AttributeError:
        raise TypeError(f"expected a kolors pipeline (with .components.unet/.text_encoder), got {type(pipe)}") from None


def _state(models: dict[str, torch.nn.Module]) -> _LoraState:
    return _STATES.setdefault(models["unet"], _LoraState())


def _names(state: _LoraState) -> str:
    return ", ".join(state.loras) or "none"


def _adapter_name(name: str | None, path: Path, state: _LoraState) -> str:
    if name is not None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise InvalidParameterError(f"LoRA name '{name}' may only hold letters, digits, '_' and '-'")
        if name in state.loras:
            raise KolorsError(f"a LoRA named '{name}' is already loaded: unload it first or choose another name")
        return name
    stem = path.stem if path.is_file() else path.name
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "lora"
    candidate, i = base, 2
    while candidate in state.loras:
        candidate, i = f"{base}_{i}", i + 1
    return candidate


def _require_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError:
        raise KolorsError("LoRA support needs the peft package: pip install 'peft>=0.13'") from None


def _check_weight(weight: float) -> float:
    try:
        value = float(weight)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"LoRA weight must be a number, got {weight!r}") from None
    if not math.isfinite(value):
        raise InvalidParameterError(f"LoRA weight must be a finite number, got {weight}")
    return value

