"""Which words of a prompt does a shapes model use? A probe that needs no sampling and no image checker.

    python -m kolors.evaluation.word_probe [--model DIR] [--scenes 24] [--pairs 24] [--timesteps 300,600,900]
                                           [--json FILE]

For rendered single-shape scenes, the denoising loss is measured with the true caption and with the caption after
one word is swapped for another value of the same attribute (colour, shape, position: the mirrored grid cell,
background), on the same latents, noise and timestep. A model that uses a word predicts worse with the wrong one:
the report gives, per attribute, language and timestep, the mean relative loss increase in percent. About 0 means
the word is ignored there: a model that ignores position words at the high-noise timesteps, where a small latent's
layout is decided, places shapes where its seed's noise suggests whatever the prompt says.

``binding`` does the same for two-object scenes ("a red circle to the left of a blue square"): the wrong caption
gives each object the other's colour ("a blue circle to the left of a red square"), so it has the same words and
only their attachment differs. A model that reads colours as a bag of words scores about 0 there, and draws two
objects in one colour or the other. ``one-shape`` names the first object's shape for both ("a red circle to the left
of a blue circle"): about 0 there, and a model draws two objects of one kind where two kinds were asked.

``attention`` says *where* the words are read, on the same two-object scenes under their true captions: the share of
an object word's cross-attention (its colour and its shape word, mean over heads, layers and words) that falls on
that object's latent cells, beside the share attention spread evenly would give (the objects' area). Near that
chance level, each object's cells read the other's words too.

It takes seconds on a CPU, so a training run can be checked for a new ability long before images show it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..arguments import Parser, non_negative_int
from ..data.captions import EN_WORDS, ZH_WORDS
from ..data.shapes import (COLOURS, POSITIONS, SHAPES, Scene, Shape, allowed_backgrounds, exchange_colours,
                           one_shape, render_array, sample_scene)
from .reports import check_report_path, write_report

__all__ = ["ATTRIBUTES", "PAIR_ATTRIBUTES", "probe_caption", "swapped", "probe_scenes", "probe_pair_scenes",
           "word_probe", "format_probe", "main"]
PROG = "python -m kolors.evaluation.word_probe"  # how its errors and usage name it

ATTRIBUTES = ("colour", "shape", "position", "background")  # of single-shape scenes
PAIR_ATTRIBUTES = ("binding", "one-shape")  # of two-object scenes
DEFAULT_TIMESTEPS = (300, 600, 900)
MAX_SCENES = 512  # one batch through the UNet: 512 scenes are about 1 GB of activations at 128 px


def probe_caption(scene: Scene, lang: str) -> str:
    """One fixed wording stating all four attributes of a single-shape scene, or both objects, their relation and
    the background of a two-object scene (first synonym of each word)."""
    s = scene.shapes[0]
    words = EN_WORDS if lang == "en" else ZH_WORDS
    if scene.kind == "pair":
        (c1, s1), (c2, s2) = ((words["colour"][o.colour][0], words["shape"][o.shape][0]) for o in scene.shapes)
        relation, background = words["relation"][scene.relation][0], words["background"][scene.background][0]
        if lang == "en":
            return f"a {c1} {s1} {relation} a {c2} {s2} on a {background} background"
        return f"{background}背景，{c1}{s1}在{c2}{s2}的{relation}"
    colour, shape = words["colour"][s.colour][0], words["shape"][s.shape][0]
    position, background = words["position"][s.position][0], words["background"][scene.background][0]
    if lang == "en":
        return f"a {colour} {shape} {position} on a {background} background"
    return f"{background}背景，{position}一个{colour}{shape}"


def swapped(scene: Scene, attribute: str) -> Scene:
    """``scene`` with one attribute of its shape (or its background) changed to a clearly different value; for
    ``binding`` (two-object scenes), the two objects' colours exchanged; for ``one-shape``, both objects the first
    one's shape."""
    s, bg = scene.shapes[0], scene.background
    if attribute in PAIR_ATTRIBUTES:
        if scene.kind != "pair":
            raise ValueError(f"{attribute} is swapped in two-object scenes only")
        changed = exchange_colours(scene) if attribute == "binding" else one_shape(scene, 0)
        if changed is None:
            raise ValueError(f"{attribute} is swapped in two-object scenes of two "
                             + ("colours" if attribute == "binding" else "shapes") + " only")
        return changed
    if attribute == "background":
        return dataclasses.replace(scene, background=next(b for b in allowed_backgrounds([s.colour]) if b != bg))
    if attribute == "colour":
        start = COLOURS.index(s.colour)
        options = [COLOURS[(start + k) % len(COLOURS)] for k in range(1, len(COLOURS))]
        new = Shape(s.shape, next(c for c in options if bg in allowed_backgrounds([c])), s.size, s.position)
    elif attribute == "shape":
        new = Shape(SHAPES[(SHAPES.index(s.shape) + 1) % len(SHAPES)], s.colour, s.size, s.position)
    elif attribute == "position":
        col, row = s.cell
        new = Shape(s.shape, s.colour, s.size, POSITIONS[(2 - row) * 3 + (2 - col)])
    else:
        raise ValueError(f"attribute must be one of {', '.join(ATTRIBUTES + PAIR_ATTRIBUTES)}, not {attribute!r}")
    return dataclasses.replace(scene, shapes=(new,))


def probe_scenes(n: int, *, seed: int = 0) -> list[Scene]:
    """``n`` training-split single-shape scenes off the centre cell (whose mirror is itself)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        scene = sample_scene(rng, "train", kind="single")
        if scene.shapes[0].position != "center":
            out.append(scene)
    return out


def probe_pair_scenes(n: int, *, seed: int = 0) -> list[Scene]:
    """``n`` training-split two-object scenes with a relation, two colours and two shapes (so that exchanging the
    colours changes which shape has which)."""
    rng = np.random.default_rng([seed, 2])
    out = []
    while len(out) < n:
        scene = sample_scene(rng, "train", kind="pair")
        first, second = scene.shapes
        if scene.relation is not None and first.colour != second.colour and first.shape != second.shape:
            out.append(scene)
    return out


@torch.no_grad()
def word_probe(pipe, scenes: Sequence[Scene], *, pair_scenes: Sequence[Scene] = (),
               timesteps: Sequence[int] = DEFAULT_TIMESTEPS, languages: Sequence[str] = ("en", "zh"),
               seed: int = 0) -> dict:
    """{attribute: {lang: {timestep: mean relative loss increase (%)}}} of ``pipe`` (a kolors Pipeline): the
    ``ATTRIBUTES`` on ``scenes``, and the ``PAIR_ATTRIBUTES`` on ``pair_scenes`` when there are any, with
    ``"attention"``: {lang: {timestep: (% of object words' attention on their object, % by chance)}}."""
    from diffusers import DDPMScheduler

    from ..recipe.architecture import MAX_TOKENS
    from ..recipe.grounding import CrossAttentionMaps, attention_on_objects, caption_token_objects
    from ..recipe.pool import object_masks
    from ..training.loss import prediction_target

    c = pipe.components
    schedule = DDPMScheduler.from_config(c.scheduler.config)
    limit = schedule.config.num_train_timesteps
    if not timesteps or any(not 0 <= int(t) < limit for t in timesteps):
        raise ValueError(f"timesteps must lie in 0..{limit - 1}, got {list(timesteps)}")
    size = c.unet.config.sample_size * pipe.vae_scale_factor
    generator = torch.Generator().manual_seed(seed)
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=pipe.dtype, device=pipe.device)

    def encoded(group: Sequence[Scene]) -> tuple[torch.Tensor, dict]:
        """The scenes' latents and one noise draw per timestep."""
        pixels = torch.from_numpy(np.stack([render_array(s, size) for s in group])).permute(0, 3, 1, 2)
        pixels = pixels.float().div(127.5).sub(1)
        latents = torch.cat([pipe.encode_pixels(p[None], [generator]) for p in pixels]).float()
        return latents, {t: torch.randn(latents.shape, generator=generator) for t in timesteps}

    def losses(latents: torch.Tensor, noise: torch.Tensor, captions: list[str], t: int) -> torch.Tensor:
        embeddings = [pipe.encode_prompt(text, guidance=False)[0] for text in captions]
        tokens = torch.cat([e.tokens for e in embeddings]).to(pipe.device, pipe.dtype)
        pooled = torch.cat([e.pooled for e in embeddings]).to(pipe.device, pipe.dtype)
        steps = torch.full((len(captions),), int(t), dtype=torch.long)
        noisy = schedule.add_noise(latents, noise, steps)
        with pipe.placement.using(c.unet):
            pred = c.unet(noisy.to(pipe.device, pipe.dtype), steps.to(pipe.device), encoder_hidden_states=tokens,
                          added_cond_kwargs={"text_embeds": pooled,
                                             "time_ids": time_ids.expand(len(captions), 6)}).sample
        target = prediction_target(schedule, latents, noise, steps)
        return (pred.float().cpu() - target).pow(2).mean(dim=(1, 2, 3))

    groups = [(scenes, ATTRIBUTES)] + ([(pair_scenes, PAIR_ATTRIBUTES)] if pair_scenes else [])
    report: dict = {}
    for group, attributes in groups:
        latents, noise = encoded(group)
        for attribute in attributes:
            report[attribute] = {lang: {} for lang in languages}
        pairs = attributes == PAIR_ATTRIBUTES
        if pairs:
            report["attention"] = {lang: {} for lang in languages}
            masks = torch.from_numpy(np.stack([object_masks(s, size, pipe.vae_scale_factor) for s in group]))
        for lang in languages:
            true_captions = [probe_caption(s, lang) for s in group]
            if pairs:
                objects = torch.from_numpy(np.stack([caption_token_objects(c.tokenizer, s, text, lang, MAX_TOKENS)
                                                     for s, text in zip(group, true_captions)]))
            for t in timesteps:
                maps = CrossAttentionMaps()
                with maps.recording(c.unet, torch.arange(len(group))) if pairs else contextlib.nullcontext():
                    base = losses(latents, noise[t], true_captions, t)
                if pairs:
                    share, chance = attention_on_objects([m.float().cpu() for m in maps.maps], objects, masks)
                    report["attention"][lang][int(t)] = (100 * share, 100 * chance)
                for attribute in attributes:
                    wrong = losses(latents, noise[t], [probe_caption(swapped(s, attribute), lang) for s in group], t)
                    report[attribute][lang][int(t)] = float(((wrong - base) / base).mean() * 100)
    return report


def format_probe(report: dict) -> str:
    """Markdown tables: one row per attribute and language, one column per timestep; then, with two-object scenes,
    where their words are read."""
    first = next(iter(report.values()))
    timesteps = list(next(iter(first.values())))
    header = " | ".join(f"t={t}" for t in timesteps) + " |"
    lines = ["| word swapped | language | " + header, "| --- | --- |" + " --- |" * len(timesteps)]
    for attribute, by_lang in report.items():
        if attribute != "attention":
            for lang, by_t in by_lang.items():
                lines.append(f"| {attribute} | {lang} | " + " | ".join(f"{v:+.1f}%" for v in by_t.values()) + " |")
    if "attention" in report:
        lines += ["", "| object words' attention on their object (by chance) | language | " + header,
                  "| --- | --- |" + " --- |" * len(timesteps)]
        for lang, by_t in report["attention"].items():
            lines.append(f"| attention | {lang} | "
                         + " | ".join(f"{share:.1f}% ({chance:.1f}%)" for share, chance in by_t.values()) + " |")
    return "\n".join(lines)


def _timesteps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 300,600,900, "
                                         f"got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model folder (default: $KOLORS_MODEL, else the built-in model)")
    p.add_argument("--scenes", type=int, default=24, help="rendered single-shape scenes (default 24)")
    p.add_argument("--pairs", type=int, default=24,
                   help="rendered two-object scenes for the binding and one-shape rows (default 24; 0: none)")
    p.add_argument("--timesteps", type=_timesteps, default=DEFAULT_TIMESTEPS, help="default 300,600,900")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)
    check_report_path(p, args.json)
    if not 1 <= args.scenes <= MAX_SCENES:
        p.error(f"--scenes must be 1 to {MAX_SCENES}, not {args.scenes}")
    if not 0 <= args.pairs <= MAX_SCENES:
        p.error(f"--pairs must be 0 to {MAX_SCENES}, not {args.pairs}")

    from ..errors import KolorsError
    from ..signals import import_whole

    import_whole("kolors.pipelines.pipeline")  # a signal during the imports: one line, not a wrapped traceback
    from ..pipelines.pipeline import Pipeline

    try:
        pipe = Pipeline.from_pretrained(args.model, device=args.device)
        report = word_probe(pipe, probe_scenes(args.scenes, seed=args.seed),
                            pair_scenes=probe_pair_scenes(args.pairs, seed=args.seed), timesteps=args.timesteps,
                            seed=args.seed)
    except (KolorsError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.scenes} scenes, {args.pairs} two-object scenes; mean relative increase of the denoising loss with "
          "the word swapped, the two objects' colours exchanged (binding), or one shape named for both "
          "(one-shape) (0: ignored)")
    print(format_probe(report))
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    from ..libraries import quiet_import_notes
    from ..signals import run_command

    quiet_import_notes("diffusers", "transformers")  # this process is the tool's: the libraries' notes stay off

    sys.exit(run_command(main, prog=PROG))
