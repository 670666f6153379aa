"""Stage "export": the trained components as a diffusers Kolors folder (fp16 variant) with its README.

The folder is written beside its destination and renamed into place only when complete, so an interrupted export
never leaves a half-written model; :func:`verify_on_cpu` then loads it with diffusers' own ``KolorsPipeline``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from .architecture import KOLORS_SCHEDULER_CONFIG

__all__ = ["check_destination", "check_exported_model", "export_folder", "render_readme", "init_note", "verify_on_cpu", "hardware_description",
           "folder_size", "count_params"]


def export_folder(
    out: Path,
    *,
    tokenizer,
    vae,
    text_encoder,
    unet,
    defaults: dict,
    info: dict,
    vocabulary: Path | None = None,
    scheduler_config: dict | None = None,
) -> None:
    """Write the diffusers Kolors layout (fp16 variant) into ``out``, replacing what was there only when complete.

    ``vocabulary``: the run's ``vocabulary.json`` (the words of its training captions), copied beside the weights.
    ``scheduler_config``: the noise schedule the model was trained with (default: the Kolors one).
    """
    import copy

    from diffusers import EulerDiscreteScheduler, KolorsPipeline

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    scheduler = EulerDiscreteScheduler.from_config(scheduler_config or KOLORS_SCHEDULER_CONFIG)
    pipe = KolorsPipeline(
        vae=copy.deepcopy(vae).cpu().half(),
        text_encoder=copy.deepcopy(text_encoder).cpu().half(),
        tokenizer=tokenizer,
        unet=copy.deepcopy(unet).cpu().half(),
        scheduler=scheduler,
        force_zeros_for_empty_prompt=False,
    )
    pipe.save_pretrained(str(tmp), variant="fp16", safe_serialization=True)
    (tmp / "kolors_defaults.json").write_text(json.dumps(defaults, indent=2) + "\n", encoding="utf-8")
    if vocabulary is not None and Path(vocabulary).is_file():
        shutil.copyfile(vocabulary, tmp / Path(vocabulary).name)
    info = dict(info, defaults=defaults, size_mb=(folder_size(tmp) + 4096) / 1e6)
    (tmp / "README.md").write_text(render_readme(info), encoding="utf-8")
    old = out.with_name(out.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)


# What every folder this recipe exports holds; a folder with them may be replaced by a new export.
_EXPORT_MARKERS = ("model_index.json", "kolors_defaults.json")


def _replaceable(folder: Path) -> bool:
    return not folder.exists() or (folder.is_dir() and (not any(folder.iterdir())
                                                        or all((folder / m).is_file() for m in _EXPORT_MARKERS)))


def check_destination(out: Path, init_from: Path | None) -> None:
    """Refuse (KolorsError) an ``out`` whose export would replace what this recipe did not write: a file, a folder
    of other files, the ``--init-from`` model (or a folder holding it), and the same for the ``.tmp`` / ``.old``
    folders beside it that the export uses."""
    from ..errors import KolorsError

    out = Path(out).resolve()
    if init_from is not None:
        source = Path(init_from).resolve()
        if out == source or source.is_relative_to(out) or out.is_relative_to(source):
            raise KolorsError(f"--out {out} would replace the model it reads ({source}): choose another folder")
    for folder in (out, out.with_name(out.name + ".tmp"), out.with_name(out.name + ".old")):
        if not _replaceable(folder):
            raise KolorsError(f"{folder} exists and is not a model this recipe exported: choose a new --out "
                              "(nothing was changed)")


def check_exported_model(folder: Path, parts: tuple[str, ...] = ("tokenizer", "text_encoder", "unet", "vae"),
                         *, option: str = "") -> Path:
    """Refuse (KolorsError) a ``folder`` that is not a model this recipe exported with the component folders
    ``parts``: checked before anything loads, so a wrong path is one line, not a traceback (nor a Hub id looked
    up). ``option``, when given, names the option that gave it (e.g. "--init-from")."""
    from ..errors import KolorsError

    folder = Path(folder)
    missing = ([] if (folder / "model_index.json").is_file() else ["model_index.json"]) + \
        [f"{part}/" for part in parts if not (folder / part).is_dir()]
    if not folder.is_dir() or missing:
        what = "does not exist" if not folder.exists() else "is not a folder" if not folder.is_dir() else \
            f"is not a model folder the recipe exported (no {', '.join(missing)})"
        raise KolorsError(f"{option + ' ' if option else ''}{folder} {what}: give the --out folder of a recipe run")
    return folder


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def render_readme(info: dict) -> str:
    ev = info.get("eval") or {}
    lines = [
        "# Kolors-shapes: the built-in model",
        "",
        "A small model of the Kolors architecture (ChatGLM-style text encoder, SDXL-style UNet with Kolors",
        "conditioning, AutoencoderKL), every component trained from scratch by this project's recipe",
        "(`python -m kolors.recipe`) on its synthetic bilingual (Chinese/English) shapes dataset. It draws simple",
        "coloured shapes; it is a working default and a test fixture, not a general image model.",
        "",
        "Folder layout: the diffusers Kolors layout (`model_index.json`, `scheduler/`, `text_encoder/`, `tokenizer/`,",
        "`unet/`, `vae/`, fp16 weights as the `fp16` variant); it loads with `KolorsPipeline.from_pretrained(folder,",
        'variant="fp16")` and with this project\'s loader.',
        "",
        "| | |",
        "| --- | --- |",
        f"| native resolution | {info['width']}×{info['height']} px |",
        f"| defaults | {info['defaults']['steps']} steps, guidance {info['defaults']['guidance']:g}"
        + (f" over the first {info['defaults']['guidance_stop']:.0%} of the steps"
           if info["defaults"].get("guidance_stop", 1) < 1 else "") + " (`kolors_defaults.json`) |",
        f"| parameters | text encoder {info['params']['text_encoder']:,}, UNet {info['params']['unet']:,}, "
        f"VAE {info['params']['vae']:,} |",
        f"| folder size | {info.get('size_mb', 0):.1f} MB |",
        "| licence | Apache-2.0 (same as the project) |",
        f"| data | synthetic: {info.get('pool_size', 0):,} `kolors.data.shapes` training scenes rendered by the recipe, "
        f"captions in English and Chinese (random language per sample, {info.get('caption_dropout', 0.1):.0%} empty) |",
        f"| training | {info['status']}: {info['steps_diffusion']:,} diffusion steps × batch {info['batch_size']}, "
        f"VAE {info['steps_vae']:,} steps × batch {info['batch_size_vae']} |",
        f"| training time | {info['minutes']:.1f} min wall clock (all stages and the evaluation) |",
        f"| hardware | {info['hardware']} |",
        "",
        "Training command:",
        "",
        "```",
        info["command"],
        "```",
        "",
    ]
    init = info.get("init_from")
    if init:
        lines += [
            "That run started from a model this recipe had trained before (`--init-from`), whose own training was:",
            "",
            "| | |",
            "| --- | --- |",
            *init["rows"],
            "",
        ]
        if init.get("command"):
            lines += ["```", init["command"], "```", ""]
    if ev:
        lines += [
            f"Held-out evaluation (the committed composition prompts, `kolors.evaluation.heldout_prompts`; scenes and "
            f"wordings never seen in training), {ev.get('seeds', 2)} seeds each, {ev['steps']} steps, guidance "
            f"{ev['guidance']:g}, scored by the automatic checker (`kolors.evaluation.composition`):",
            "",
            "| metric | language | right | 95% interval | images |",
            "| --- | --- | --- | --- | --- |",
        ]
        for metric, per_lang in ev["metrics"].items():
            for lang, v in per_lang.items():
                lines.append(f"| {metric} | {lang} | {v['rate']:.1%} | {v['ci'][0]:.1%}–{v['ci'][1]:.1%} | {v['n']} |")
        lines.append("")
    return "\n".join(lines)


def init_note(folder: Path | None) -> dict | None:
    """What the README says of the model a run started from: its own README's training lines."""
    if folder is None:
        return None
    readme = Path(folder) / "README.md"
    lines = readme.read_text(encoding="utf-8").splitlines() if readme.is_file() else []
    keep = [ln for ln in lines if ln.startswith(("| training", "| hardware"))]
    command = next((lines[i + 1] for i, ln in enumerate(lines[:-1]) if ln.startswith("```") and i + 1 < len(lines)
                    and lines[i + 1].startswith("python")), None)
    return {"folder": str(folder), "rows": keep, "command": command}


@torch.no_grad()
def verify_on_cpu(folder: Path) -> dict:
    """Load ``folder`` with diffusers' reference KolorsPipeline on CPU in fp32 and generate one image."""
    from diffusers import KolorsPipeline

    t0 = time.monotonic()
    pipe = KolorsPipeline.from_pretrained(str(folder), variant="fp16", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("一个红色的圆形", num_inference_steps=4, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    if not np.isfinite(image).all():
        raise RuntimeError(f"the exported model in {folder} generates non-finite pixels")
    return {"shape": tuple(image.shape), "seconds": time.monotonic() - t0}


def hardware_description(device: torch.device) -> str:
    cores = os.cpu_count() or 1
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = f"{cores} CPU cores ({cpu})"
    if device.type == "cuda":
        text = f"1× {torch.cuda.get_device_name(device)}, " + text
    return text + f", torch {torch.__version__}"
