"""Run modes: named trade-offs between speed, memory and exactness, and what each one switches on.

The names are importable without torch (the CLI builds its parser from them).

| mode         | weights live on     | text encoder   | VAE decode | UNet (CUDA)                   | sampling               |
| ------------ | ------------------- | -------------- | ---------- | ----------------------------- | ---------------------- |
| exact        | the device          | as loaded      | whole      | as loaded (``--compile``: fused QKV, channels-last, torch.compile) | as asked |
| fast         | the device          | as loaded      | whole      | + fp8 matmuls on sm89+        | DPM++ 2M, half the default steps |
| low-memory   | CPU, one part on the device at a time | int8 | whole | as loaded                  | as asked               |
| sequential   | CPU, streamed layer by layer          | as loaded | tiled | as loaded               | as asked               |

``fast`` changes the math on purpose and ``low-memory`` rounds the text encoder's weights to int8; ``sequential``
computes exact mode's latents and decodes them in overlapping 512-px tiles (seams are blended; the VAE's
mid-block attention then sees one tile at a time) — see docs/performance.md for the measured costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..defaults import MODES, TEXT_ENCODER_QUANTS
from ..errors import InvalidParameterError

OFFLOADS = ("none", "model", "sequential")

FAST_SCHEDULER = "dpmpp_2m"
FAST_STEP_FRACTION = 0.5
FAST_MIN_STEPS = 8


@dataclass(frozen=True)
class RunSettings:
    """What a run mode turns on; every field can also be set on its own."""

    mode: str = "exact"
    offload: str = "none"  # "model": each component on the device only while it runs; "sequential": layer by layer
    text_encoder_quant: str = "none"  # weight-only quantisation of ChatGLM's linear layers (torchao)
    vae_tiling: bool = False
    compile: bool = False  # CUDA: fused QKV, channels-last and torch.compile of the UNet, with a persistent cache
    fp8: bool = False  # CUDA sm89+: fp8 matmuls in the UNet's transformer blocks (torchao)
    scheduler: str | None = None  # the sampler used when the caller names none
    step_fraction: float = 1.0  # of the model's default steps, used when the caller gives no step count

    @property
    def weights_on_cpu(self) -> bool:
        """Whether the weights are kept in CPU memory between uses."""
        return self.offload != "none"

    def default_steps(self, model_default: int) -> int:
        """The step count used when the caller gives none."""
        if self.step_fraction >= 1.0:
            return model_default
        return max(min(FAST_MIN_STEPS, model_default), math.ceil(model_default * self.step_fraction))

    def parameters(self) -> dict[str, object]:
        """What is stored in a PNG so that the image can be made again the same way."""
        params: dict[str, object] = {}
        if self.mode != "exact":
            params["mode"] = self.mode
        if self.text_encoder_quant != settings_for(self.mode).text_encoder_quant:
            params["text_encoder_quant"] = self.text_encoder_quant
        return params


def settings_for(mode: str = "exact", *, offload: str | None = None, text_encoder_quant: str | None = None,
                 compile: bool | None = None) -> RunSettings:
    """The settings of ``mode``, with any of ``offload``/``text_encoder_quant``/``compile`` overridden."""
    if mode not in MODES:
        raise InvalidParameterError(f"unknown mode '{mode}': use one of {', '.join(MODES)}")
    base = {
        "exact": RunSettings(),
        "fast": RunSettings(mode="fast", compile=True, fp8=True, scheduler=FAST_SCHEDULER,
                            step_fraction=FAST_STEP_FRACTION),
        "low-memory": RunSettings(mode="low-memory", offload="model", text_encoder_quant="int8"),
        "sequential": RunSettings(mode="sequential", offload="sequential", vae_tiling=True),
    }[mode]
    if offload is not None:
        if offload not in OFFLOADS:
            raise InvalidParameterError(f"unknown offload '{offload}': use one of {', '.join(OFFLOADS)}")
        base = replace(base, offload=offload)
    if text_encoder_quant is not None:
        if text_encoder_quant not in TEXT_ENCODER_QUANTS:
            raise InvalidParameterError(f"unknown text encoder quantisation '{text_encoder_quant}': use one of "
                                        f"{', '.join(TEXT_ENCODER_QUANTS)}")
        base = replace(base, text_encoder_quant=text_encoder_quant)
    if compile is not None:
        base = replace(base, compile=compile)
    return base
