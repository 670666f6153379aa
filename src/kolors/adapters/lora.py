"""LoRA adapters owned by a pipeline: loaded once, applied for exactly the requests that name them.

A :class:`LoraSet` holds the LoRAs loaded into one pipeline's UNet and ChatGLM3 text encoder as peft LoRA layers
(``inject_adapter_in_model`` + ``set_peft_model_state_dict``). A request's LoRAs are made active at their weights
for its generation only (:meth:`LoraSet.applied`); inactive peft layers compute exactly the base layer, and
removing a LoRA puts the original modules back, so the base model is bit for bit itself again. A bounded number
of LoRAs stays loaded (least recently used ones are removed first), and a file is read once until it changes.

The functions below (``load_lora(pipe, path, weight)``, ``set_lora_weights``, ``fuse_lora``, ``unload_lora``, …)
are the older way: LoRAs loaded with them are *attached* to the pipeline and apply to every request that names no
LoRAs of its own. File formats: :mod:`kolors.adapters.lora_format`.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidParameterError, KolorsError
from ..request import Lora
from .lora_format import COMPONENTS, LoraLayer, read_lora, target_modules

MAX_LOADED = 8  # LoRAs kept loaded for requests (the attached ones come on top)


@dataclass
class LoadedLora:
    """One LoRA loaded into a pipeline."""

    name: str  # the peft adapter name, used by set_lora_weights / unload_lora
    path: Path
    weight: float  # the weight it is attached at (requests give their own)
    sha256: str  # of the file (of the files, in name order, for a DreamBooth folder)
    layers: dict[str, int]  # LoRA layers per component, e.g. {"unet": 140, "text_encoder": 28}
    addnet_hash: str | None = None  # sha256 of the tensor bytes after the safetensors header (A1111's LoRA hash)
    stamp: tuple[int, int] = (0, 0)  # the file's (mtime_ns, size) when it was read

    def parameters(self, weight: float | None = None) -> dict[str, Any]:
        """The JSON-serialisable record of this LoRA in an image's parameters: ``sha256`` is the whole file's (what
        ``sha256sum`` prints), ``hash`` the short hash A1111's ``Lora hashes`` field shows for it."""
        return {"name": self.name, "file": self.path.name, "path": str(self.path),
                "weight": self.weight if weight is None else weight, "sha256": self.sha256, "hash": self.a1111_hash}

    @property
    def a1111_hash(self) -> str:
        """The short hash A1111's ``Lora hashes`` field shows (of the tensor bytes, as A1111 computes it)."""
        return (self.addnet_hash or self.sha256)[:12]


class LoraSet:
    """The LoRAs loaded into one pipeline's UNet and text encoder, and which of them are active."""

    def __init__(self, components: Any, max_loaded: int = MAX_LOADED) -> None:
        self._models = {c: getattr(components, c) for c in COMPONENTS}
        self.max_loaded = max_loaded
        self._loaded: dict[str, LoadedLora] = {}  # by adapter name
        self._by_path: OrderedDict[Path, str] = OrderedDict()  # request LoRAs by file, least recently used first
        self._attached: dict[str, float] = {}  # name -> weight: the LoRAs of requests that name none
        self._active: dict[str, float] = {}
        self._fused = False
        self._originals: dict[tuple[str, str], torch.Tensor] = {}  # weights before fusing (CPU)
        # peft layers taken out of the model while none of their LoRAs is active (or while fused): the model then
        # runs its plain layers, with no wrapper overhead; (component, module name) -> the peft layer
        self._idle: dict[tuple[str, str], Any] = {}

    # --- requests ---------------------------------------------------------------------------------------------
    def get(self, path: str | Path, *, allow_pickle: bool = False) -> LoadedLora:
        """The LoRA in ``path``, loaded on first use (read again only when the file changed)."""
        path = Path(path).expanduser()
        key = path.resolve()
        for attached in self._attached:  # an attached LoRA of the same file serves requests too
            lora = self._loaded[attached]
            if lora.path.resolve() == key and lora.stamp == _stamp(path):
                return lora
        name = self._by_path.get(key)
        if name is not None and self._loaded[name].stamp == _stamp(path):
            self._by_path.move_to_end(key)
            return self._loaded[name]
        if name is not None:  # the file changed: read it again
            self._remove(name)
        lora = self._load(path, 1.0, None, allow_pickle)
        self._by_path[key] = lora.name
        self._evict()
        return lora

    @contextlib.contextmanager
    def applied(self, specs: Sequence[Lora] | None) -> Iterator[None]:
        """Inside this block exactly the LoRAs of ``specs`` are active, at their weights."""
        wanted: dict[str, float] = {}
        for spec in specs or ():
            name = self.get(spec.path).name
            wanted[name] = wanted.get(name, 0.0) + float(spec.weight)
        if wanted == self._active and not (self._fused and wanted != self._attached):
            yield
            return
        was_fused, previous = self._fused, dict(self._active)
        if was_fused:
            self._unfuse()
        self._activate(wanted)
        try:
            yield
        finally:
            self._activate(previous)
            if was_fused:
                self._fuse()

    def attached(self) -> list[Lora]:
        """The attached LoRAs as request entries (what a request that names no LoRAs gets)."""
        return [Lora(str(self._loaded[n].path), w) for n, w in self._attached.items() if w != 0]

    def records(self, specs: Sequence[Lora] | None) -> dict[str, Any]:
        """The ``loras`` (name, file, path, weight, sha256) and A1111 ``lora_hashes`` entries of an image's
        parameters (nothing without LoRAs; LoRAs at weight 0 change nothing and are left out)."""
        used = [(self.get(s.path), float(s.weight)) for s in specs or () if s.weight != 0]
        if not used:
            return {}
        return {"loras": [lora.parameters(weight) for lora, weight in used],
                "lora_hashes": ", ".join(f"{re.sub('[:,]', '', lora.name)}: {lora.a1111_hash}" for lora, _ in used)}

    def text_encoder_state(self) -> tuple:
        """What the text encoder's output depends on besides its input: the active LoRAs that adapt it."""
        return tuple((n, w) for n, w in self._active.items() if "text_encoder" in self._loaded[n].layers) + (
            (self._fused,) if self._fused else ())

    # --- attached LoRAs (the older API) -------------------------------------------------------------------------
    def load(self, path: str | Path, weight: float = 1.0, name: str | None = None, *,
             allow_pickle: bool = False) -> str:
        """Load the LoRA in ``path`` and attach it at ``weight``; returns its name (unique, from the file name)."""
        weight = check_weight(weight)
        lora = self._load(Path(path).expanduser(), weight, name, allow_pickle)
        self._change_attached({**self._attached, lora.name: weight})
        return lora.name

    def loaded(self) -> list[LoadedLora]:
        """The attached LoRAs, in load order."""
        return [self._loaded[n] for n in self._attached]

    def cached(self) -> list[LoadedLora]:
        """The LoRAs kept loaded for requests, least recently used first."""
        return [self._loaded[n] for n in self._by_path.values()]

    def set_weights(self, weights: Mapping[str, float]) -> None:
        unknown = [n for n in weights if n not in self._attached]
        if unknown:
            raise KolorsError(f"no LoRA named '{unknown[0]}' is loaded (loaded: {self._names()})")
        checked = {n: check_weight(w) for n, w in weights.items()}
        for n, w in checked.items():
            self._loaded[n].weight = w
        self._change_attached({**self._attached, **checked})

    def unload(self, name: str | None = None) -> None:
        if name is not None and name not in self._attached:
            raise KolorsError(f"no LoRA named '{name}' is loaded (loaded: {self._names()})")
        names = list(self._attached) if name is None else [name]
        self._change_attached({n: w for n, w in self._attached.items() if n not in names}, remove=names)

    def clear(self) -> None:
        """Remove every LoRA, attached or not: the model is exactly as it was loaded."""
        self._change_attached({}, remove=list(self._loaded))

    def fuse(self) -> None:
        """Merge the attached LoRAs into the model weights (faster); the originals are kept on the CPU."""
        if not self._fused:
            self._fuse()

    def unfuse(self) -> None:
        if self._fused:
            self._unfuse()

    def _change_attached(self, attached: dict[str, float], remove: Sequence[str] = ()) -> None:
        was_fused = self._fused
        if was_fused:
            self._unfuse()
        for name in remove:
            self._remove(name)
        self._attached = attached
        self._activate(dict(attached))
        if was_fused and attached:
            self._fuse()

    def _names(self) -> str:
        return ", ".join(self._attached) or "none"

    # --- peft layers ----------------------------------------------------------------------------------------------
    def _load(self, path: Path, weight: float, name: str | None, allow_pickle: bool) -> LoadedLora:
        _require_peft()
        name = self._adapter_name(name, path)
        stamp = _stamp(path)
        lora_file = read_lora(path, self._models, allow_pickle=allow_pickle)
        record = LoadedLora(name=name, path=path, weight=weight, sha256=lora_file.sha256, layers=lora_file.counts,
                            addnet_hash=lora_file.addnet_hash, stamp=stamp)
        was_fused = self._fused
        if was_fused:
            self._unfuse()
        self._attach_all()  # peft adds the new LoRA to the layers it already wraps
        try:
            for component, entries in lora_file.layers.items():
                _inject(self._models[component], entries, name)
        except Exception:
            _remove_adapter(self._models, name)
            raise
        else:
            self._loaded[name] = record
        finally:
            self._activate(dict(self._active))  # new layers start inactive
            if was_fused:
                self._fuse()
        return record

    def _remove(self, name: str) -> None:
        self._attach_all()
        _remove_adapter(self._models, name)
        self._loaded.pop(name, None)
        self._active.pop(name, None)
        for key, value in list(self._by_path.items()):
            if value == name:
                del self._by_path[key]
        self._detach_idle()

    def _evict(self) -> None:
        """Remove the least recently used request LoRAs beyond ``max_loaded`` (never attached or active ones)."""
        while len(self._by_path) > self.max_loaded:
            victim = next((n for n in self._by_path.values() if n not in self._attached and n not in self._active),
                          None)
            if victim is None:
                return
            self._remove(victim)

    def _activate(self, weights: dict[str, float]) -> None:
        """Make exactly the LoRAs of ``weights`` active in every layer they have, at their weights; layers with
        none of them active run as the plain layers they wrap."""
        self._attach_all()
        names = [n for n in weights if n in self._loaded]
        for model in self._models.values():
            for _, module in _tuner_layers(model):
                module.set_adapter(names, inference_mode=True)
                for name in names:
                    module.set_scale(name, weights[name])
        self._active = {n: weights[n] for n in names}
        self._detach_idle()

    def _attach_all(self) -> None:
        """Every peft layer back in its place (peft's own operations find them there)."""
        for (component, module_name), layer in self._idle.items():
            _replace(self._models[component], module_name, layer)
        self._idle.clear()

    def _detach_idle(self) -> None:
        """Layers with no active LoRA (all of them when fused: the merged weights are in the plain layers) are
        replaced by the plain layers they wrap."""
        for component, model in self._models.items():
            for module_name, module in _tuner_layers(model):
                if self._fused or not any(n in module.lora_A for n in self._active):
                    self._idle[(component, module_name)] = module
                    _replace(model, module_name, module.get_base_layer())

    def _fuse(self) -> None:
        self._attach_all()
        for component, model in self._models.items():
            for module_name, module in _tuner_layers(model):
                adapters = [n for n in self._active if n in module.lora_A]
                if not adapters:
                    continue
                base = module.get_base_layer()
                self._originals[(component, module_name)] = base.weight.detach().to("cpu", copy=True)
                module.merge(adapter_names=adapters)
        self._fused = True
        self._detach_idle()

    def _unfuse(self) -> None:
        self._attach_all()
        for component, model in self._models.items():
            for module_name, module in _tuner_layers(model):
                original = self._originals.pop((component, module_name), None)
                if original is None:
                    continue
                module.unmerge()
                with torch.no_grad():
                    module.get_base_layer().weight.copy_(original)  # bit-exact, whatever unmerge's rounding
        self._originals.clear()
        self._fused = False
        self._detach_idle()

    def _adapter_name(self, name: str | None, path: Path) -> str:
        if name is not None:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise InvalidParameterError(f"LoRA name '{name}' may only hold letters, digits, '_' and '-'")
            if name in self._loaded:
                raise KolorsError(f"a LoRA named '{name}' is already loaded: unload it first or choose another name")
            return name
        stem = path.stem if path.is_file() else path.name
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "lora"
        candidate, i = base, 2
        while candidate in self._loaded:
            candidate, i = f"{base}_{i}", i + 1
        return candidate


# --- the older functional API --------------------------------------------------------------------------------------
def load_lora(pipe: Any, path: str | Path, weight: float = 1.0, name: str | None = None, *,
              allow_pickle: bool = False) -> str:
    """Load the LoRA in ``path`` into ``pipe`` at ``weight`` and return its adapter name.

    ``name`` defaults to the file name without its extension (made unique). Several LoRAs can be loaded;
    their effects add up. Raises KolorsError when the file is missing, unreadable, not a LoRA, or made for a
    different base model (its layers do not exist in this model or have other shapes).
    """
    return _loras(pipe).load(path, weight, name, allow_pickle=allow_pickle)


def set_lora_weights(pipe: Any, weights: Mapping[str, float]) -> None:
    """Set the weight of loaded LoRAs by name (others keep theirs); 0 switches a LoRA off."""
    _loras(pipe).set_weights(weights)


def fuse_lora(pipe: Any) -> None:
    """Merge the loaded LoRAs, at their current weights, into the model weights (faster generation).

    The original weights are kept in CPU memory so that ``unfuse_lora`` and ``unload_lora`` restore them
    exactly. Changing weights or loading another LoRA while fused re-fuses automatically.
    """
    _loras(pipe).fuse()


def unfuse_lora(pipe: Any) -> None:
    """Undo ``fuse_lora``: the model weights are the original ones again, the LoRAs stay loaded."""
    _loras(pipe).unfuse()


def unload_lora(pipe: Any, name: str | None = None) -> None:
    """Remove the LoRA called ``name`` (all LoRAs when None); the model is exactly as before it was loaded."""
    _loras(pipe).unload(name)


def loaded_loras(pipe: Any) -> list[LoadedLora]:
    """The LoRAs loaded into ``pipe``, in load order."""
    return _loras(pipe).loaded()


def lora_parameters(pipe: Any) -> list[dict[str, Any]]:
    """``[{"name", "file", "weight", "sha256"}]`` for the generation parameters (empty without LoRAs).

    LoRAs at weight 0 are left out: they do not change the image.
    """
    return [{"name": lora.name, "file": lora.path.name, "weight": lora.weight, "sha256": lora.sha256[:10]}
            for lora in loaded_loras(pipe) if lora.weight != 0]


def a1111_lora_hashes(pipe: Any) -> str | None:
    """The value of A1111's ``Lora hashes`` field (``"name: hash, …"``), or None without LoRAs."""
    parts = [f"{re.sub('[:,]', '', lora.name)}: {lora.a1111_hash}" for lora in loaded_loras(pipe) if lora.weight != 0]
    return ", ".join(parts) or None


def parse_lora_spec(spec: str) -> tuple[str, float]:
    """``FILE[:WEIGHT]`` (the CLI's ``--lora``) as ``(file, weight)``; the weight defaults to 1."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", tail.strip()):
        return head, check_weight(float(tail))
    return spec, 1.0


def check_weight(weight: float) -> float:
    try:
        value = float(weight)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"LoRA weight must be a number, got {weight!r}") from None
    if not math.isfinite(value):
        raise InvalidParameterError(f"LoRA weight must be a finite number, got {weight}")
    return value


def _loras(pipe: Any) -> LoraSet:
    loras = getattr(pipe, "loras", None)
    if not isinstance(loras, LoraSet):
        raise TypeError(f"expected a kolors pipeline (with a .loras LoraSet), got {type(pipe).__name__}")
    return loras


def _stamp(path: Path) -> tuple[int, int]:
    """(mtime_ns, size) of a file, or of the newest file in a folder: what tells that it changed."""
    try:
        files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else [path]
        stats = [p.stat() for p in files]
    except OSError:
        return (0, 0)
    return (max((s.st_mtime_ns for s in stats), default=0), sum(s.st_size for s in stats))


def _require_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError:
        raise KolorsError("LoRA support needs the peft package: pip install 'peft>=0.13'") from None


def _inject(model: torch.nn.Module, entries: dict[str, LoraLayer], name: str) -> None:
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
    targets = target_modules(model)
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


def _replace(model: torch.nn.Module, module_name: str, module: torch.nn.Module) -> None:
    parent_name, _, child = module_name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _remove_adapter(models: dict[str, torch.nn.Module], name: str) -> None:
    """Delete adapter ``name``; layers left without adapters become the original modules again."""
    for model in models.values():
        for module_name, module in _tuner_layers(model):
            if name in module.lora_A:
                module.delete_adapter(name)
            if not module.lora_A:
                _replace(model, module_name, module.get_base_layer())
        configs = model.__dict__.get("peft_config")
        if isinstance(configs, dict):
            configs.pop(name, None)
        if not _tuner_layers(model):
            for attr in ("peft_config", "_hf_peft_config_loaded"):
                if attr in model.__dict__:
                    delattr(model, attr)
