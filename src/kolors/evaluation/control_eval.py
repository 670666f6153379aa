"""Does a canny ControlNet put the shape where the control image says? Held-out scenes, with and without it.

    python -m kolors.evaluation.control_eval [--model DIR] [--controlnet DIR] [--pairs 64] [--scale 0.7] [--json F]

For each of the first ``--pairs`` pairs of the committed held-out prompts (single-shape scenes whose colour / shape
/ size / position combination and wording training never saw; each pair is one scene captioned in English and in
Chinese) and each language: the scene is rendered, the render is given as ``Control("canny", render)`` (the
pipeline makes its canny edge map, as ``kolors generate --control canny=render.png`` does), and an image is
generated from the scene's prompt. The same prompt, seed, steps and guidance are generated once more without the
ControlNet: the baseline.

**Position match**: the automatic checker (``shapes_checker.check_image``) finds the dominant shape of the generated
image and reads its position as the nearest cell centre of the 3×3 grid the scenes are built on; a case matches
when that cell is the scene's (a case with no shape found does not match). The report gives the match rate over all
cases, split by whether the prompt itself names the position (some held-out wordings do, e.g. "{pos} there is a
small red circle"), with the checker's colour and shape agreement beside it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from ..arguments import Parser, non_negative_int, positive_int
from ..data.shapes import Scene, render
from . import shapes_checker
from .heldout_prompts import load_heldout_prompts
from .reports import check_report_path, write_report

__all__ = ["DEFAULT_PAIRS", "control_cases", "evaluate_control", "format_report", "main"]
PROG = "python -m kolors.evaluation.control_eval"  # how its errors and usage name it

DEFAULT_PAIRS = 64  # 128 cases: 64 scenes × (English, Chinese)


def names_position(row: dict) -> bool:
    """Whether the held-out prompt of ``row`` states the shape's position."""
    return "position" in row["states"]


def control_cases(pairs: int | None = DEFAULT_PAIRS, languages: Sequence[str] = ("en", "zh"),
                  size: int = 128, first: int = 0) -> list[dict]:
    """The evaluation cases: held-out prompt rows of pairs ``first`` … ``first + pairs - 1`` with their rendered
    scene (``render``) and seed (the pair id)."""
    rows = [r for r in load_heldout_prompts() if r["lang"] in languages and r["pair_id"] >= first
            and (pairs is None or r["pair_id"] < first + pairs)]
    return [{**r, "render": render(Scene.from_dict(r["scene"]), size), "seed": r["pair_id"],
             "names_position": names_position(r)} for r in rows]


def evaluate_control(pipe, cases: list[dict], *, control: bool, kind: str = "canny", scale: float | None = None,
                     steps: int | None = None, guidance: float | None = None, progress: bool = False) -> dict:
    """The position-match report of ``pipe`` (a ControlNetPipeline with a ``kind`` ControlNet) on ``cases``,
    generating with the control image (``control=True``) or without it (the baseline)."""
    from ..adapters.controlnet import DEFAULT_SCALE
    from ..defaults import CONTROL_GUIDANCE as DEFAULT_GUIDANCE
    from ..request import Control

    scale = DEFAULT_SCALE if scale is None else scale
    guidance = DEFAULT_GUIDANCE if guidance is None else guidance
    records = []
    for case in tqdm(cases, desc="with control" if control else "without", unit="image", disable=not progress):
        controls = [Control(kind, case["render"], scale=scale)] if control else []
        image = pipe(case["prompt"], controls=controls, seed=case["seed"], steps=steps, guidance=guidance,
                     progress=False).images[0]
        found = shapes_checker.check_image(image)
        records.append({
            "pair_id": case["pair_id"], "lang": case["lang"], "prompt": case["prompt"], "seed": case["seed"],
            "names_position": case["names_position"], "position": case["position"],
            "detected": {"position": found.position, "colour": found.colour, "shape": found.shape,
                         "centre": found.centre},
            "match": found.position == case["position"],
            "colour_right": found.colour == case["colour"], "shape_right": found.shape == case["shape"],
            "image": image,
        })
    report = summarise(records)
    report["settings"] = {"control": control, "kind": kind, "scale": scale if control else None,
                          "steps": steps or pipe.defaults.steps, "guidance": guidance}
    return report


def summarise(records: list[dict]) -> dict:
    """Match rates of ``records`` overall, by language and by whether the prompt names the position."""
    def rates(sel: list[dict]) -> dict:
        n = len(sel)
        return {"n": n, "position": sum(r["match"] for r in sel) / n if n else 0.0,
                "found": sum(r["detected"]["position"] is not None for r in sel) / n if n else 0.0,
                "colour": sum(r["colour_right"] for r in sel) / n if n else 0.0,
                "shape": sum(r["shape_right"] for r in sel) / n if n else 0.0}

    return {
        **rates(records),
        "languages": {lang: rates([r for r in records if r["lang"] == lang])
                      for lang in sorted({r["lang"] for r in records})},
        "prompt_names_position": rates([r for r in records if r["names_position"]]),
        "prompt_without_position": rates([r for r in records if not r["names_position"]]),
        "records": records,
    }


def format_report(with_control: dict, without: dict | None = None) -> str:
    """A Markdown table of the reports with and (optionally) without the ControlNet."""
    s = with_control["settings"]
    lines = [f"{with_control['n']} held-out cases, {s['steps']} steps, guidance {s['guidance']:g}, "
             f"{s['kind']} control scale {s['scale']:g}; position match = the checker's 3×3 cell of the dominant "
             "shape is the scene's", "",
             "| run | position match | prompt names the position | prompt does not | colour right | shape right |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, report in (("with the ControlNet", with_control), ("without (baseline)", without)):
        if report is None:
            continue
        named, unnamed = report["prompt_names_position"], report["prompt_without_position"]
        lines.append(f"| {name} | {report['position']:.1%} ({round(report['position'] * report['n'])}/"
                     f"{report['n']}) | {named['position']:.1%} ({named['n']}) | {unnamed['position']:.1%} "
                     f"({unnamed['n']}) | {report['colour']:.1%} | {report['shape']:.1%} |")
    return "\n".join(lines)


def _without_images(report: dict) -> dict:
    return {**report, "records": [{k: v for k, v in r.items() if k != "image"} for r in report["records"]]}


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model folder (default: $KOLORS_MODEL, else the built-in model)")
    p.add_argument("--controlnet", help="canny ControlNet folder (default with the built-in model: the shipped one)")
    p.add_argument("--pairs", type=positive_int, default=DEFAULT_PAIRS,
                   help=f"held-out scenes (default {DEFAULT_PAIRS}; two cases each, English and Chinese)")
    p.add_argument("--first-pair", type=non_negative_int, default=0, help="start at this held-out pair (default 0)")
    p.add_argument("--scale", type=float, help="control scale (default: the ControlNet default, 0.7)")
    p.add_argument("--steps", type=positive_int)
    p.add_argument("--guidance", type=float, help="for both runs (default: the ControlNet default, 6.0)")
    p.add_argument("--no-baseline", action="store_true", help="skip the run without the ControlNet")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, help="also write the reports (every case) here")
    p.add_argument("--save-images", type=Path, metavar="DIR", help="also write the generated images here")
    args = p.parse_args(argv)
    check_report_path(p, args.json)
    cases = control_cases(args.pairs, first=args.first_pair)
    if not cases:
        last = max(r["pair_id"] for r in load_heldout_prompts())
        p.error(f"argument --first-pair: the held-out pairs are 0 to {last}, got {args.first_pair}")

    from ..signals import import_whole

    import_whole("kolors.adapters.controlnet", "kolors.pipelines.legacy")  # a signal meanwhile: one line
    from ..adapters.controlnet import embedded_controlnet
    from ..errors import KolorsError
    from ..pipelines.legacy import ControlNetPipeline

    try:
        pipe = ControlNetPipeline.from_pretrained(args.model, device=args.device)
        folder = args.controlnet or (embedded_controlnet("canny") if pipe.is_builtin else None)
        if folder is None:
            raise KolorsError("pass --controlnet DIR (a canny ControlNet for this model)")
        pipe.add_controlnet("canny", folder)
    except KolorsError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    progress = sys.stderr.isatty()
    reports = {"with_control": evaluate_control(pipe, cases, control=True, scale=args.scale, steps=args.steps,
                                                guidance=args.guidance, progress=progress)}
    if not args.no_baseline:
        reports["without_control"] = evaluate_control(pipe, cases, control=False, steps=args.steps,
                                                      guidance=args.guidance, progress=progress)
    seconds = time.monotonic() - t0
    print(format_report(reports["with_control"], reports.get("without_control")))
    print(f"\n{len(cases)} cases in {seconds:.0f} s; ControlNet: {folder}")
    if args.save_images:
        args.save_images.mkdir(parents=True, exist_ok=True)
        for name, report in reports.items():
            for r in report["records"]:
                r["image"].save(args.save_images / f"{name}-{r['pair_id']:03d}-{r['lang']}.png")
    if args.json:
        data = {name: _without_images(report) for name, report in reports.items()}
        data.update(seconds=seconds, controlnet=str(folder))
        write_report(args.json, data, indent=2)
    return 0


if __name__ == "__main__":
    from ..libraries import quiet_import_notes
    from ..signals import run_command

    quiet_import_notes("diffusers", "transformers")  # this process is the tool's: the libraries' notes stay off

    raise SystemExit(run_command(main, prog=PROG))
