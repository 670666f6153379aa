"""What a shapes model gets right on the committed held-out prompts, per category and language, with intervals.

    python -m kolors.evaluation.shapes_eval [--model DIR] [--prompts composition|colour-shape|pair-splits] [--seeds 2]
        [--pairs N] [--category C ...] [--steps N] [--guidance F] [--guidance-stop F] [--reference JSON|none] [--json FILE]
        [--images DIR | --rescore DIR]

Generates every prompt of the set (each English prompt and its Chinese translation) at seeds 0..S-1 with this
project's pipeline, scores each image with the automatic checker (:mod:`kolors.evaluation.composition`) and prints
per metric and language the rate with its 95% Wilson interval, next to a reference report on the same prompts
(by default the first built-in model's, committed in ``data/``; ``--reference`` names another ``--json`` file).

Prompt sets: ``composition`` (default) — the composition benchmark (plain, background, position, count and pair
prompts); ``colour-shape`` — the first model's 252-pair colour/shape benchmark, also scored on position and
background where a prompt states them; ``pair-splits`` — two-object prompts from the training side of the split and
the held-out one (:mod:`kolors.evaluation.split_prompts`; one ``--category`` at a time: train, wordings, combos,
heldout), to tell a model that has not fitted its data from one that does not generalise. ``--images DIR`` keeps
every image (``{pair}-{lang}-{seed}.png``) to look at the failures; ``--rescore DIR`` scores such a folder again
without loading a model (after a checker change).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from ..arguments import Parser, positive_int
from ..request import MAX_IMAGES
from .composition import METRICS, score, summarise
from .heldout_prompts import load_composition_prompts, load_heldout_prompts
from .reports import check_report_path, write_report
from .split_prompts import build_split_prompts

__all__ = ["PROMPT_SETS", "REFERENCES", "prompt_rows", "evaluate_pipeline", "format_report", "main"]
PROG = "python -m kolors.evaluation.shapes_eval"  # how its errors and usage name it

PROMPT_SETS = ("composition", "colour-shape", "pair-splits")
DATA = Path(__file__).with_name("data")
# The first built-in model's reports on the committed sets (25 steps, guidance 5, seeds 0 and 1).
REFERENCES = {name: DATA / f"reference_v1_{name}.json" for name in ("composition", "colour-shape")}


def _colour_shape_expects(row: dict) -> dict:
    out = {"colour": row["colour"], "shape": row["shape"]}
    for attribute in ("position", "background"):
        if attribute in row["states"]:
            out[attribute] = row[attribute]
    return out


def prompt_rows(prompts: str = "composition", *, pairs: int | None = None, categories: Sequence[str] | None = None,
                languages: Sequence[str] = ("en", "zh")) -> list[dict]:
    """The rows of a prompt set, each with ``expects``; the first ``pairs`` pairs of each category when given."""
    if prompts == "composition":
        rows = load_composition_prompts()
    elif prompts == "colour-shape":
        rows = [{**r, "category": "colour-shape", "expects": _colour_shape_expects(r)} for r in load_heldout_prompts()]
    elif prompts == "pair-splits":
        rows = build_split_prompts()
    else:
        raise ValueError(f"prompt set must be one of {', '.join(PROMPT_SETS)}, not {prompts!r}")
    first: dict[str, int] = {}
    for r in rows:
        first.setdefault(r["category"], r["pair_id"])
    unknown = [c for c in categories or () if c not in first]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a category of the {prompts} prompts: choose from {', '.join(first)}")
    return [r for r in rows if r["lang"] in languages and (not categories or r["category"] in categories)
            and (pairs is None or r["pair_id"] - first[r["category"]] < pairs)]


def evaluate_pipeline(pipe, rows: list[dict], *, seeds: int = 2, steps: int | None = None,
                      guidance: float | None = None, guidance_stop: float | None = None, progress: bool = False,
                      images: Path | None = None) -> dict:
    """``{"settings", "metrics": summarise(...), "records"}`` of ``pipe`` on ``rows`` at seeds 0..``seeds``-1.

    ``images``: a folder to save every image in; with ``pipe`` None, the folder to read them from instead (scores
    of images generated before, e.g. after a change of the checker).
    """
    records = []
    if images is not None and pipe is not None:
        images.mkdir(parents=True, exist_ok=True)
    for row in tqdm(rows, desc="evaluating", unit="prompt", disable=not progress):
        if pipe is None:  # score images saved before
            generated = [(seed, _saved_image(images / _image_name(row, seed))) for seed in range(seeds)]
        else:
            result = pipe(row["prompt"], seed=0, num_images=seeds, steps=steps, guidance=guidance,
                          guidance_stop=guidance_stop, progress=False)
            generated = list(zip(result.seeds, result.images))
        for seed, image in generated:
            records.append({"pair_id": row["pair_id"], "lang": row["lang"], "category": row["category"],
                            "prompt": row["prompt"], "seed": seed, "scores": score(image, row["expects"])})
            if images is not None and pipe is not None:
                image.save(images / _image_name(row, seed))
    defaults = pipe.defaults if pipe is not None else None
    return {"settings": {"pairs": len({r["pair_id"] for r in rows}), "seeds": seeds,
                         "steps": steps or getattr(defaults, "steps", None),
                         "guidance": guidance or getattr(defaults, "guidance", None),
                         "guidance_stop": guidance_stop if guidance_stop is not None
                         else getattr(defaults, "guidance_stop", None)},
            "metrics": summarise(records), "records": records}


def _image_name(row: dict, seed: int) -> str:
    return f"{row['pair_id']:03d}-{row['lang']}-{seed}.png"


def _saved_image(path: Path) -> Image.Image:
    if not path.is_file():
        raise ValueError(f"no image {path.name} in {path.parent}: --rescore reads the --images folder of a run with "
                         "the same --prompts, --pairs, --category and --seeds")
    with Image.open(path) as image:
        return image.convert("RGB")


def format_report(report: dict, reference: dict | None = None) -> str:
    """A Markdown table: per metric and language, the rate [95% interval] (n), beside the reference's."""
    s = report["settings"]
    how = f"{s['steps']} steps, guidance {s['guidance']:g}" if s["steps"] else "images saved before"
    if s["steps"] and s.get("guidance_stop") not in (None, 1):
        how += f" over the first {s['guidance_stop']:g} of the steps"
    head = f"{s['pairs']} prompt pairs, seeds 0–{s['seeds'] - 1}, {how}; rate [95% Wilson interval] (images)"
    cols = ["this model"] + ([reference.get("name", "reference")] if reference else [])
    lines = [head, "", "| metric | language | " + " | ".join(cols) + " |", "| --- | --- |" + " --- |" * len(cols)]
    for metric in METRICS:
        for lang, v in report["metrics"].get(metric, {}).items():
            cells = [_cell(v)]
            if reference:
                cells.append(_cell(reference["metrics"].get(metric, {}).get(lang)))
            lines.append(f"| {metric} | {lang} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(v: dict | None) -> str:
    if not v:
        return "–"
    lo, hi = v["ci"]
    return f"{v['rate']:.1%} [{lo:.1%}, {hi:.1%}] ({v['n']})"


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model folder (default: $KOLORS_MODEL, else the built-in model)")
    p.add_argument("--prompts", choices=PROMPT_SETS, default="composition")
    p.add_argument("--pairs", type=positive_int, help="first pairs of each category (default: all)")
    p.add_argument("--category", action="append", help="only this category (repeatable)")
    p.add_argument("--seeds", type=positive_int, default=2, help="images per prompt, seeds 0 … N-1 (default 2)")
    p.add_argument("--steps", type=positive_int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--guidance-stop", type=float, metavar="F", help="guide only the first F of the steps")
    p.add_argument("--device", default="auto")
    p.add_argument("--reference", help="a --json report to compare with ('none': no comparison; default: the "
                                       "first built-in model's on these prompts)")
    p.add_argument("--name", default="this model", help="the model's name in a --json report")
    p.add_argument("--json", type=Path, help="also write the report here (without per-image records: --records)")
    p.add_argument("--records", action="store_true", help="keep per-image scores in the --json report")
    p.add_argument("--images", type=Path, help="save every image here")
    p.add_argument("--rescore", type=Path, metavar="DIR", help="score the images an earlier --images run saved in "
                                                               "DIR instead of generating (no model is loaded)")
    args = p.parse_args(argv)
    check_report_path(p, args.json)
    if args.seeds > MAX_IMAGES:  # one call of the pipeline per prompt makes them all
        p.error(f"argument --seeds: at most {MAX_IMAGES}, got {args.seeds}")
    if args.prompts == "pair-splits" and len(set(args.category or ())) != 1:  # their rates mean nothing pooled
        p.error("argument --category: --prompts pair-splits takes one: train, wordings, combos or heldout")
    try:
        rows = prompt_rows(args.prompts, pairs=args.pairs, categories=args.category)
    except ValueError as exc:
        p.error(f"argument --category: {exc}")

    from ..errors import KolorsError
    from ..signals import import_whole

    import_whole("kolors.pipelines.legacy")  # a signal during the imports: one line, not a wrapped traceback
    from ..pipelines.legacy import Text2ImagePipeline

    reference = None
    if args.reference != "none":
        path = Path(args.reference) if args.reference else REFERENCES.get(args.prompts)
        if path is not None and path.is_file():
            reference = json.loads(path.read_text(encoding="utf-8"))
        elif args.reference:
            print(f"{PROG}: error: no reference report {path}", file=sys.stderr)
            return 2
    pipe = None
    if args.rescore is None:
        try:
            pipe = Text2ImagePipeline.from_pretrained(args.model, device=args.device)
        except KolorsError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
    t0 = time.monotonic()
    try:
        report = evaluate_pipeline(pipe, rows, seeds=args.seeds, steps=args.steps, guidance=args.guidance,
                                   guidance_stop=args.guidance_stop, progress=sys.stderr.isatty(), images=args.rescore or args.images)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    report.update(name=args.name, prompts=args.prompts, seconds=time.monotonic() - t0)
    print(format_report(report, reference))
    if args.json:
        saved = report if args.records else {k: v for k, v in report.items() if k != "records"}
        write_report(args.json, saved)
    return 0


if __name__ == "__main__":
    from ..libraries import quiet_import_notes
    from ..signals import run_command

    quiet_import_notes("diffusers", "transformers")  # this process is the tool's: the libraries' notes stay off

    raise SystemExit(run_command(main, prog=PROG))
