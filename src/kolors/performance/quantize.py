"""Weight quantisation through torchao: the ChatGLM3 text encoder in int8/int4, the UNet's matmuls in fp8.

torchao is an optional dependency (``pip install "kolors[quant]"``); asking for a quantisation without it is a
one-line error. Only ``nn.Linear`` layers are quantised; embeddings and norms keep the model's dtype.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

import torch

from ..errors import KolorsError

logger = logging.getLogger(__name__)

INT4_GROUP_SIZE = 32
FP8_MIN_CAPABILITY = (8, 9)  # Ada / Hopper: the first GPUs with fp8 tensor cores


def quantize_text_encoder(text_encoder: torch.nn.Module, kind: str,
                          work_device: torch.device | None = None) -> torch.nn.Module:
    """Quantise the linear layers' weights of ChatGLM in place: "int8" (per channel) or "int4" (groups of 32).

    ``work_device`` (a GPU) quantises there layer by layer, much faster than on the CPU; the quantised layers are
    left on it.
    """
    if kind == "none":
        return text_encoder
    ao = _torchao(f"--text-encoder-quant {kind}")
    if kind == "int8":
        config = ao.quantization.Int8WeightOnlyConfig()
    elif kind == "int4":
        from torchao.quantization.granularity import PerGroup

        config = ao.quantization.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(INT4_GROUP_SIZE))
    else:
        raise KolorsError(f"unknown text encoder quantisation '{kind}': use none, int8 or int4")
    ao.quantization.quantize_(text_encoder, config, filter_fn=_is_linear, device=work_device)
    return text_encoder


def fp8_supported(device: torch.device) -> bool:
    """Whether ``device`` has fp8 tensor cores (CUDA, compute capability 8.9 or newer)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= FP8_MIN_CAPABILITY


def quantize_unet_fp8(unet: torch.nn.Module) -> list[str]:
    """fp8 (e4m3, dynamic activation scales) matmuls for the linear layers of the UNet's transformer blocks;
    the names of the layers converted (none when a trial layer fails on this GPU: the UNet is then left as it is).

    Only layers whose rows are tokens are converted: the time and text-time embeddings multiply a handful of rows
    (the batch), which scaled fp8 GEMMs do not accept (cuBLAS NOT_SUPPORTED), and they cost nothing. Scales are
    per row for bf16 weights and per tensor otherwise (row-wise scaled GEMMs produce bf16 only).
    """
    import copy

    ao = _torchao("fp8 (fast mode)")
    from torchao.quantization.granularity import PerRow, PerTensor

    candidates = [fqn for fqn, m in unet.named_modules() if _token_linear(m, fqn)]
    if not candidates:
        return []
    weight = unet.get_submodule(candidates[0]).weight
    granularity = PerRow() if weight.dtype == torch.bfloat16 else PerTensor()
    config = ao.quantization.Float8DynamicActivationFloat8WeightConfig(granularity=granularity)
    trial = copy.deepcopy(unet.get_submodule(candidates[0]))
    try:
        ao.quantization.quantize_(trial, config)
        trial(torch.randn(64, trial.in_features, device=weight.device, dtype=weight.dtype))
    except (RuntimeError, NotImplementedError, ValueError, AssertionError) as exc:  # torchao asserts on hardware
        logger.warning("fp8 matmuls are not available here (%s): fast mode runs without them",
                       str(exc).splitlines()[0][:120])
        return []
    ao.quantization.quantize_(unet, config, filter_fn=_token_linear)
    return candidates


def _token_linear(module: torch.nn.Module, fqn: str) -> bool:
    return (_is_linear(module, fqn) and ".transformer_blocks." in f".{fqn}"
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def _is_linear(module: torch.nn.Module, fqn: str = "") -> bool:
    return isinstance(module, torch.nn.Linear)


def _torchao(what: str):
    """The torchao module, imported quietly, or a one-line error saying how to install it."""
    try:
        with _quiet():
            import torchao
            import torchao.quantization  # noqa: F401
    except ImportError:
        raise KolorsError(f"{what} needs torchao: pip install \"kolors[quant]\" (or pip install torchao)") from None
    return torchao


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torchao prints notes about optional CUDA kernels and deprecations at import; keep them off the console."""
    sink = io.StringIO()
    level = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(level)

