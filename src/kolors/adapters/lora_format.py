"""LoRA files: the formats Kolors LoRAs come in, read and matched to the layers of a loaded model.

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import KolorsError
from ..loading.weights import read_weight_file
from .lora_files import SAFETENSORS_SUFFIX, lora_files

logger = logging.getLogger(__name__)

COMPONENTS = ("unet", "text_encoder")
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
class LoraFile:
    """A LoRA file read and matched to a model: its layers by component and module, and its hashes."""

    path: Path
    layers: dict[str, dict[str, LoraLayer]]  # e.g. {"unet": {"down_blocks.1...to_q": LoraLayer}}
    sha256: str  # of the file (of the files, in name order, for a DreamBooth folder)
    addnet_hash: str | None  # sha256 of the tensor bytes after the safetensors header (A1111's LoRA hash)

    @property
    def counts(self) -> dict[str, int]:
        """LoRA layers per component, e.g. ``{"unet": 140, "text_encoder": 28}``."""
        return {component: len(entries) for component, entries in self.layers.items()}


def read_lora(path: Path, models: dict[str, torch.nn.Module], *, allow_pickle: bool = False) -> LoraFile:
    """Read the LoRA at ``path`` for ``models`` (``{"unet": ..., "text_encoder": ...}``); a one-line KolorsError
    when it is missing, unreadable, not a LoRA, damaged (non-finite values) or made for another base model."""
    state_dict, config = _read_lora(path, allow_pickle)
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise KolorsError(f"LoRA file {path.name} is damaged: tensor {key} holds NaN or infinite values")
    layers = _parse_layers(state_dict, config, models, path)
    return LoraFile(path, layers, _file_sha256(path), _addnet_hash(path))


# --- reading files ---------------------------------------------------------------------------------------------
def _read_lora(path: Path, allow_pickle: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """All tensors of a LoRA file (or DreamBooth folder) and the LoraConfig values found beside them."""
    files = lora_files(path, allow_pickle=allow_pickle)
    state: dict[str, torch.Tensor] = {}
    config: dict[str, Any] = {}
    for file in files:
        tensors = _read_file(file)
        if any(k.startswith(_PEFT_MODEL_PREFIX) for k in tensors):
            config.update(_peft_adapter_config(file))
        if file.suffix == SAFETENSORS_SUFFIX:
            config.update(_header_config(file))
        state.update(tensors)
    return state, config


def _read_file(path: Path) -> dict[str, torch.Tensor]:
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
    files = lora_files(path, allow_pickle=True)
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
class LoraLayer:
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None
    source: str = ""  # a tensor name from the file, for messages
    config_key: str = "*"  # which header/adapter config describes it


def _parse_layers(state: dict[str, torch.Tensor], config: dict[str, Any], models: dict[str, torch.nn.Module],
                  path: Path) -> dict[str, dict[str, LoraLayer]]:
    """The file's LoRA layers by component and module name, checked against the model's modules."""
    for key in state:
        for fragment, kind in _UNSUPPORTED.items():
            if fragment in key:
                raise KolorsError(f"LoRA file {path} is a {kind} adapter ({key}): only plain LoRA is supported")

    targets = {c: target_modules(m) for c, m in models.items()}
    layers: dict[tuple[str | None, str], LoraLayer] = {}
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

    result: dict[str, dict[str, LoraLayer]] = {}
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
    layer = layers.setdefault((component, module), LoraLayer(source=source, config_key=config_key))
    if role == "alpha":
        layer.alpha = float(tensor.float().item())
    else:
        setattr(layer, role, tensor)
        if layer.source.endswith(".alpha"):
            layer.source = source


def target_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
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


def _fit(layer: LoraLayer, base: torch.nn.Module) -> str | None:
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


def _alpha(layer: LoraLayer, module: str, component: str, config: dict[str, Any]) -> float:
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
