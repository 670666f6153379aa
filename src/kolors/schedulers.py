"""Sampler names, each a diffusers scheduler built from the checkpoint's own scheduler config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import InvalidParameterError

if TYPE_CHECKING:
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

# name -> (diffusers class name, config overrides). "default" is whatever the checkpoint's scheduler folder says.
# Class names, not classes: the CLI lists the names without importing diffusers.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}
SCHEDULER_NAMES = ("default", *SCHEDULERS)


def make_scheduler(name: str | None, base: SchedulerMixin) -> SchedulerMixin:
    """A fresh scheduler named ``name`` with the noise schedule of ``base`` (the checkpoint's scheduler)."""
    if name in (None, "default"):
        return base.__class__.from_config(base.config)
    if name not in SCHEDULERS:
        raise InvalidParameterError(f"unknown scheduler '{name}': use one of {', '.join(SCHEDULER_NAMES)}")
    import diffusers

    class_name, overrides = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(base.config, **overrides)
