"""Held-out evaluation of a trained shapes model: generate with diffusers' KolorsPipeline, check every image.

Prompts come from the dataset's held-out split in every language; each prompt is generated with several seeds,
and the automatic checker says whether the asked colour and the asked shape are in the image.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .pool import LANGUAGES, scene_captions, shapes_module

__all__ = ["EvalSpec", "heldout_prompts", "generate", "evaluate", "check_images", "reconstruction_check", "parse_grid",
           "evaluate_folder"]


@dataclass
class EvalSpec:
    pairs: int = 64  # held-out scenes, each prompted in every language
    seeds: tuple[int, ...] = (0, 1)
    split: str = "heldout"
    seed: int = 12345
    batch_size: int = 64


@dataclass
class EvalResult:
    steps: int
    guidance: float
    per_language: dict[str, dict[str, float]] = field(default_factory=dict)
    images: int = 0
    seconds: float = 0.0
    agreement: dict = field(default_factory=dict)
    final: bool = False

    @property
    def score(self) -> float:
        """Mean of colour and shape accuracy over languages (what picks the defaults)."""
        vals = [v for lang in self.per_language.values() for k, v in lang.items() if k in ("colour", "shape")]
        return float(np.mean(vals)) if vals else 0.0

    def as_dict(self) -> dict:
        return {
            "steps": self.steps,
            "guidance": self.guidance,
            "images": self.images,
            "seconds": round(self.seconds, 2),
            "score": round(self.score, 4),
            "per_language": self.per_language,
            "agreement": self.agreement,
            "final": self.final,
        }

    def line(self) -> str:
        parts = [
            f"{lang}: colour {v['colour']:.1%} shape {v['shape']:.1%}" for lang, v in self.per_language.items()
        ]
        return f"steps {self.steps} guidance {self.guidance:g}: " + "; ".join(parts) + f" ({self.images} images)"


def heldout_prompts(spec: EvalSpec) -> list[dict]:
    """Rows ``{pair_id, lang, prompt, colour, shape}`` of the first ``spec.pairs`` held-out pairs (en + zh).

    The committed benchmark file of ``kolors.evaluation.heldout_prompts`` when there is one, else pairs sampled
    from the dataset's held-out split with its held-out wordings.
    """
    try:
        from ..evaluation.heldout_prompts import load_heldout_prompts

        rows = [r for r in load_heldout_prompts() if r["pair_id"] < spec.pairs]
        if rows:
            return rows
    except (ImportError, OSError):
        pass
    shapes = shapes_module()
    rng = np.random.default_rng(spec.seed)
    rows = []
    for pair_id in range(spec.pairs):
        scene = shapes.sample_scene(rng, spec.split)
        shape = scene.shapes[0]
        for lang, text in zip(LANGUAGES, scene_captions(shapes, scene, rng)):
            rows.append({"pair_id": pair_id, "lang": lang, "prompt": text, "colour": shape.colour,
                         "shape": shape.shape})
    return rows


@torch.no_grad()
def generate(pipe, prompts: list[str], seeds: list[int], *, steps: int, guidance: float, batch_size: int,
             device: torch.device) -> np.ndarray:
    """uint8 N×H×W×3 images for (prompt, seed) pairs, in order."""
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk, chunk_seeds = prompts[i : i + batch_size], seeds[i : i + batch_size]
        gens = [torch.Generator(device=device).manual_seed(s) for s in chunk_seeds]
        images = pipe(
            prompt=chunk,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=gens,
            output_type="np",
        ).images
        out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def check_images(images: np.ndarray, scenes: list) -> np.ndarray:
    """N×2 booleans: (colour right, shape right) of each image against its scene."""
    from ..evaluation import shapes_checker

    return np.array([shapes_checker.check(img, scene) for img, scene in zip(images, scenes)], dtype=bool).reshape(-1, 2)


def evaluate(
    pipe,
    spec: EvalSpec,
    *,
    steps: int,
    guidance: float,
    device: torch.device,
    log: Callable[[str], None] | None = None,
) -> EvalResult:
    """Accuracy per language of ``pipe`` on the held-out prompts at ``steps``/``guidance``."""
    from ..evaluation import shapes_checker

    t0 = time.monotonic()
    records, prompts, seeds = [], [], []
    for row in heldout_prompts(spec):
        for s in spec.seeds:
            records.append({"lang": row["lang"], "colour": row["colour"], "shape": row["shape"],
                            "pair_id": row["pair_id"], "seed": s, "prompt": row["prompt"]})
            prompts.append(row["prompt"])
            seeds.append(s)
    pipe.set_progress_bar_config(disable=True)
    images = generate(pipe, prompts, seeds, steps=steps, guidance=guidance, batch_size=spec.batch_size, device=device)
    for record, image in zip(records, images):
        record["image"] = image
    report = shapes_checker.evaluate_images(records)
    result = EvalResult(steps=steps, guidance=guidance, images=len(images))
    for lang in LANGUAGES:
        if lang in report["languages"]:
            result.per_language[lang] = dict(report["languages"][lang])
    result.agreement = report.get("agreement", {})
    result.seconds = time.monotonic() - t0
    if log is not None:
        log("eval " + result.line() + f" in {result.seconds:.0f}s")
    return result


@torch.no_grad()
def reconstruction_check(vae, *, split: str, image_size: int, seed: int, device: torch.device, n: int = 128) -> dict:
    """Checker accuracy on VAE reconstructions of held-out renders: the ceiling the diffusion model works under."""
    from .autoencoder import to_model_range

    try:
        shapes = shapes_module()
        rng = np.random.default_rng([seed, 99])
        images, _caps, scenes = shapes.batch(rng, n, split, image_size)
        x = to_model_range(torch.from_numpy(images).to(device))
        vae.to(device).eval()
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
        rec = ((rec.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        checks = check_images(rec, scenes)
    except ImportError:
        return {}
    return {"n": n, "colour": float(checks[:, 0].mean()), "shape": float(checks[:, 1].mean())}


def parse_grid(text: str) -> list[tuple[int, float]]:
    """``"20x5,30x7.5"`` → [(20, 5.0), (30, 7.5)]: (steps, guidance) points."""
    grid = []
    for item in text.split(","):
        s, g = item.strip().split("x")
        grid.append((int(s), float(g)))
    return grid


def evaluate_folder(folder, spec: EvalSpec, grid: list[tuple[int, float]], *, final_pairs: int | None,
                    device: torch.device, log: Callable[[str], None] | None = None):
    """The held-out grid on a folder loaded with diffusers' KolorsPipeline; returns (best, every result).

    The best point is the highest score, among scores within half a point the fewest steps; it is measured again
    on ``final_pairs`` pairs when that is more than ``spec.pairs``.
    """
    from diffusers import KolorsPipeline

    pipe = KolorsPipeline.from_pretrained(str(folder), variant="fp16", dtype=torch.float32).to(device)
    results = []
    for steps, guidance in grid:
        try:
            results.append(evaluate(pipe, spec, steps=steps, guidance=guidance, device=device, log=log))
        except ImportError as exc:  # the checker is missing: nothing to choose defaults with
            if log is not None:
                log(f"eval skipped: {exc}")
            return None, results
    top = max(r.score for r in results)
    best = min((r for r in results if r.score >= top - 0.005), key=lambda r: (r.steps, -r.score))
    if log is not None:
        log("eval best of the grid: " + best.line())
    if final_pairs and final_pairs > spec.pairs:
        best = evaluate(pipe, replace(spec, pairs=final_pairs), steps=best.steps, guidance=best.guidance,
                        device=device, log=log)
        best.final = True
        results.append(best)
    return best, results
