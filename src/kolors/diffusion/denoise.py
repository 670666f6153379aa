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
    ``stop``); later steps take the conditional prediction as it is and do not run the unconditional rows.
    ``generators``: one CPU generator per image, for the conditioners and for stochastic samplers.
    """
    n = latents.shape[0]
    step_kwargs = _step_kwargs(scheduler, generators if n > 1 else generators[0])
    guided_steps = int(guidance_stop * len(timesteps)) if guidance is not None else 0
    # Once guidance stops, the unconditional rows are not run at all (as diffusers' guiders do), unless a
    # conditioner holds the batch layout fixed; then they are run and left unused.
    drop_uncond = guidance is not None and all(h.follows_rows for h in conditioners)
    if drop_uncond:
        cond_context, cond_added = context[n:], {k: v[n:] if isinstance(v, torch.Tensor) and v.shape[:1] == (2 * n,)
                                                 else v for k, v in added.items()}
    for h in conditioners:
        h.begin(scheduler, generators, latents, timesteps)

    for i, t in enumerate(timesteps):
        guided = i < guided_steps
        step_context, step_added = (cond_context, cond_added) if drop_uncond and not guided else (context, added)
        model_in = torch.cat([latents, latents]) if step_context.shape[0] == 2 * n else latents
        model_in = scheduler.scale_model_input(model_in, t)
        extra = merge_unet_kwargs([h.unet_kwargs(model_in, t, i / len(timesteps), step_context, step_added)
                                   for h in conditioners])
        step_added = {**step_added, **extra.pop("added_cond_kwargs", {})}
        for h in conditioners:
            model_in = h.model_input(model_in, t)
        inputs = UNetInputs(model_in, step_context, step_added, extra)
        for h in conditioners:
            inputs = h.extra_rows(inputs, n)

        prediction = unet(inputs.sample, t, encoder_hidden_states=inputs.context, added_cond_kwargs=inputs.added,
                          return_dict=False, **inputs.kwargs)[0]
        rows = model_in.shape[0]
        noise = prediction[:rows]
        if rows == 2 * n:  # [uncond, cond]: guided, or guidance stopped with the layout held
            noise = noise[:n] + guidance * (noise[n:] - noise[:n]) if guided else noise[n:]
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
