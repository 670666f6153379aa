"""The denoising loop, as one function: noisy latents in, clean latents out.

Every task and adapter runs through it: text-to-image, image-to-image, inpainting and outpainting differ only
in the latents and timesteps they start from and in the conditioners they add (ControlNet residuals, an
inpainting UNet's extra channels, IP-Adapter image tokens, perturbed-attention guidance).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .conditioning import Conditioner, UNetInputs, merge_unet_kwargs

# Called after each step with (steps done, steps in all, the latents); it may raise to stop the loop.
StepCallback = Callable[[int, int, torch.Tensor], None]


@torch.no_grad()
def denoise(
    unet: torch.nn.Module,
    scheduler: Any,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    context: torch.Tensor,
    added: dict[str, torch.Tensor],
    *,
    guidance: float | None,
    guidance_stop: float = 1.0,
    conditioners: Sequence[Conditioner] = (),
    generators: list[torch.Generator],
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Run ``timesteps`` of ``scheduler`` on ``latents`` (n images).

    ``context``/``added``: the text conditioning of every UNet row — ``[uncond…, cond…]`` (2n rows) with
    classifier-free guidance at scale ``guidance``, the n conditional rows when ``guidance`` is None.
    ``guidance_stop``: guidance only in steps ``i < int(guidance_stop * len(timesteps))`` (diffusers' guider
    ``stop``); later steps take the conditional rows' prediction as it is.
    ``generators``: one CPU generator per image, for the conditioners and for stochastic samplers.
    """
    n = latents.shape[0]
    step_kwargs = _step_kwargs(scheduler, generators if n > 1 else generators[0])
    guided_steps = int(guidance_stop * len(timesteps))
    for h in conditioners:
        h.begin(scheduler, generators, latents, timesteps)

    for i, t in enumerate(timesteps):
        model_in = latents if guidance is None else torch.cat([latents, latents])
        model_in = scheduler.scale_model_input(model_in, t)
        extra = merge_unet_kwargs([h.unet_kwargs(model_in, t, i / len(timesteps), context, added)
                                   for h in conditioners])
        step_added = {**added, **extra.pop("added_cond_kwargs", {})}
        for h in conditioners:
            model_in = h.model_input(model_in, t)
        inputs = UNetInputs(model_in, context, step_added, extra)
        for h in conditioners:
            inputs = h.extra_rows(inputs, n)

        prediction = unet(inputs.sample, t, encoder_hidden_states=inputs.context, added_cond_kwargs=inputs.added,
                          return_dict=False, **inputs.kwargs)[0]
        rows = model_in.shape[0]
        noise = prediction[:rows]
        if guidance is not None:
            noise = noise[:n] + guidance * (noise[n:] - noise[:n]) if i < guided_steps else noise[n:]
        for h in conditioners:
            noise = h.guide(noise, prediction, n)

        latents = scheduler.step(noise, t, latents, **step_kwargs, return_dict=False)[0]
        next_t = timesteps[i + 1] if i + 1 < len(timesteps) else None
        for h in conditioners:
            latents = h.after_step(latents, t, next_t)
        if on_step is not None:
            on_step(i + 1, len(timesteps), latents)
    return latents


def _step_kwargs(scheduler: Any, generator: torch.Generator | list[torch.Generator]) -> dict[str, Any]:
    """The ``generator``/``eta`` keywords this scheduler's ``step`` accepts."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "generator" in accepted:
        kwargs["generator"] = generator
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    return kwargs
