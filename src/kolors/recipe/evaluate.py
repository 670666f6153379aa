"""Held-out evaluation of a trained shapes model: generate with diffusers' KolorsPipeline, check every image.

Prompts are the first pairs of each category of the committed composition prompts (``kolors.evaluation``), in
every language, each generated with several seeds; the automatic checker scores what each prompt asks (colour,
shape, background, position, count, binding, relation). A grid of (steps, guidance[, guidance stop]) picks the
model's defaults.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..data.examples import batch
from ..evaluation import shapes_checker
from ..evaluation.composition import score, summarise
from ..evaluation.shapes_eval import prompt_rows

__all__ = ["EvalSpec", "generate", "evaluate", "check_images", "reconstruction_check", "evaluate_folder"]


@dataclass
class EvalSpec:
    pairs: int = 8  # the first pairs of each category of the composition prompts, each in every language
    seeds: tuple[int, ...] = (0, 1)
    batch_size: int = 64


@dataclass
class EvalResult:
    steps: int
    guidance: float
    guidance_stop: float = 1.0  # the share of the steps guided (kolors' ``guidance_stop``; 1: every step)
    metrics: dict = field(default_factory=dict)  # kolors.evaluation.composition.summarise
    images: int = 0
    seconds: float = 0.0
    final: bool = False

    @property
    def score(self) -> float:
        """Mean rate over metrics and languages (what picks the defaults)."""
        vals = [v["rate"] for per_lang in self.metrics.values() for v in per_lang.values()]
        return float(np.mean(vals)) if vals else 0.0

    def as_dict(self) -> dict:
        return {"steps": self.steps, "guidance": self.guidance, "guidance_stop": self.guidance_stop,
                "images": self.images,
                "seconds": round(self.seconds, 2), "score": round(self.score, 4), "metrics": self.metrics,
                "final": self.final}

    def line(self) -> str:
        parts = [f"{m} " + "/".join(f"{v['rate']:.0%}" for v in per_lang.values())
                 for m, per_lang in self.metrics.items()]
        langs = "/".join(next(iter(self.metrics.values()), {}))
        stop = f" stop {self.guidance_stop:g}" if self.guidance_stop < 1 else ""
        return (f"steps {self.steps} guidance {self.guidance:g}{stop} ({langs}): " + ", ".join(parts)
                + f" ({self.images} images)")


def _stop_guidance_after(guided_steps: int):
    """A diffusers ``callback_on_step_end`` that turns classifier-free guidance off after ``guided_steps`` steps
    (kolors' ``guidance_stop``: step i is guided iff i < guided_steps) and keeps the conditional half of the batch."""
    def callback(pipe, i, t, tensors):
        if i + 1 != guided_steps:
            return {}
        pipe._guidance_scale = 1.0  # what KolorsPipeline.do_classifier_free_guidance reads at the next step
        return {name: value.chunk(2)[1] for name, value in tensors.items()}
    return callback


@torch.no_grad()
def generate(pipe, prompts: list[str], seeds: list[int], *, steps: int, guidance: float, batch_size: int,
             device: torch.device, guidance_stop: float = 1.0) -> np.ndarray:
    """uint8 N×H×W×3 images for (prompt, seed) pairs, in order."""
    guided = int(guidance_stop * steps) if guidance > 1 else steps
    extra = {}
    if 0 < guided < steps:
        extra = {"callback_on_step_end": _stop_guidance_after(guided),
                 "callback_on_step_end_tensor_inputs": ["prompt_embeds", "add_text_embeds", "add_time_ids"]}
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk, chunk_seeds = prompts[i : i + batch_size], seeds[i : i + batch_size]
        gens = [torch.Generator(device=device).manual_seed(s) for s in chunk_seeds]
        images = pipe(
            prompt=chunk,
            num_inference_steps=steps,
            guidance_scale=guidance if guided else 1.0,
            generator=gens,
            output_type="np",
            **extra,
        ).images
        out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def check_images(images: np.ndarray, scenes: list) -> np.ndarray:
    """N×2 booleans: (colour right, shape right) of each image against its scene."""
    return np.array([shapes_checker.check(img, scene) for img, scene in zip(images, scenes)], dtype=bool).reshape(-1, 2)


def evaluate(
    pipe,
    spec: EvalSpec,
    *,
    steps: int,
    guidance: float,
    device: torch.device,
    guidance_stop: float = 1.0,
    log: Callable[[str], None] | None = None,
) -> EvalResult:
    """The composition metrics per language of ``pipe`` (diffusers' KolorsPipeline) at ``steps``/``guidance``,
    guided over the first ``guidance_stop`` of the steps."""
    t0 = time.monotonic()
    rows = [r for r in prompt_rows("composition", pairs=spec.pairs) for _ in spec.seeds]
    seeds = [s for _ in range(len(rows) // len(spec.seeds)) for s in spec.seeds]
    pipe.set_progress_bar_config(disable=True)
    images = generate(pipe, [r["prompt"] for r in rows], seeds, steps=steps, guidance=guidance,
                      batch_size=spec.batch_size, device=device, guidance_stop=guidance_stop)
    records = [{"lang": r["lang"], "scores": score(image, r["expects"])} for r, image in zip(rows, images)]
    result = EvalResult(steps=steps, guidance=guidance, guidance_stop=guidance_stop, metrics=summarise(records),
                        images=len(images), seconds=time.monotonic() - t0)
    if log is not None:
        log("eval " + result.line() + f" in {result.seconds:.0f}s")
    return result


@torch.no_grad()
def reconstruction_check(vae, *, split: str, image_size: int, seed: int, device: torch.device, n: int = 128) -> dict:
    """Checker accuracy on VAE reconstructions of held-out renders: the ceiling the diffusion model works under."""
    from .autoencoder import to_model_range

    images, _caps, scenes = batch(np.random.default_rng([seed, 99]), n, split, image_size)
    x = to_model_range(torch.from_numpy(images).to(device))
    vae.to(device).eval()
    rec = vae.decode(vae.encode(x).latent_dist.mean).sample
    rec = ((rec.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    checks = check_images(rec, scenes)
    return {"n": n, "colour": float(checks[:, 0].mean()), "shape": float(checks[:, 1].mean())}


def evaluate_folder(folder, spec: EvalSpec, grid: list[tuple[int, float, float]], *, final_pairs: int | None,
                    device: torch.device, log: Callable[[str], None] | None = None):
    """The held-out grid of (steps, guidance, guidance stop) points on a folder loaded with diffusers' KolorsPipeline;
    returns (best, every result).

    The best point is the highest score, among scores within half a point the fewest steps; it is measured again
    on ``final_pairs`` pairs when that is more than ``spec.pairs``.
    """
    from diffusers import KolorsPipeline

    pipe = KolorsPipeline.from_pretrained(str(folder), variant="fp16", dtype=torch.float32).to(device)
    results = [evaluate(pipe, spec, steps=steps, guidance=guidance, guidance_stop=stop, device=device, log=log)
               for steps, guidance, stop in grid]
    top = max(r.score for r in results)
    best = min((r for r in results if r.score >= top - 0.005), key=lambda r: (r.steps, -r.score))
    if log is not None:
        log("eval best of the grid: " + best.line())
    if final_pairs and final_pairs > spec.pairs:
        best = evaluate(pipe, replace(spec, pairs=final_pairs), steps=best.steps, guidance=best.guidance,
                        guidance_stop=best.guidance_stop, device=device, log=log)
        best.final = True
        results.append(best)
    return best, results
