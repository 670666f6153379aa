"""The recipe of the embedded default model: a small Kolors-architecture model trained from scratch on shapes.

Stages, each leaving a checkpoint in the work folder so ``--resume`` picks up where a run stopped:

1. tokenizer  SentencePiece BPE on training captions of both languages, saved as a ChatGLM tokenizer
2. pool       render the synthetic bilingual shape scenes once and tokenize their captions (parallel workers)
3. vae        AutoencoderKL (factor 8, 4 latent channels) + its scaling factor; the pool is encoded to latents
4. diffusion  ChatGLM-style text encoder + SDXL-style UNet trained jointly with the Kolors conditioning
5. export     the diffusers Kolors folder (fp16 variant), periodically during diffusion and at the end
6. eval       held-out prompts in both languages, a small (steps, guidance) grid → kolors_defaults.json

    python -m kolors.training.embedded --out DIR [--device cuda|cpu] [--time-budget-minutes M] ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .data import LANGUAGES, CaptionTokens, Pool, caption_corpus, render_pool, shapes_module
from .text_to_image import (
    KOLORS_SCHEDULER_CONFIG,
    DiffusionTrainer,
    TextEncoderSpec,
    UNetSpec,
    build_text_encoder,
    build_unet,
)
from .tokenizer import load_tokenizer, padded_vocab_size, train_tokenizer
from .vae import (
    VAESpec,
    build_vae,
    check_fp16_decode,
    encode_images,
    measure_scaling_factor,
    pool_to_tensor,
    train_vae,
)

__all__ = ["RecipeConfig", "ARCHITECTURES", "run", "main", "export_folder"]

ARCHITECTURES = {
    "full": {
        "vocab_size": 1024,
        "text_encoder": TextEncoderSpec(),
        "unet": UNetSpec(),
        "vae": VAESpec(),
    },
    # For tests: the same layout, a few thousand parameters per component.
    "tiny": {
        "vocab_size": 400,
        "text_encoder": TextEncoderSpec(num_layers=2, hidden_size=32, ffn_hidden_size=64, kv_channels=8,
                                        num_attention_heads=4, multi_query_group_num=2),
        "unet": UNetSpec(block_out_channels=(16, 16, 32), layers_per_block=1, head_dim=8, cross_attention_dim=16,
                         addition_time_embed_dim=4, norm_num_groups=8),
        "vae": VAESpec(block_out_channels=(8, 8, 16, 16), norm_num_groups=4),
    },
}

# Step counts and sizes by device; every one can be overridden on the command line.
DEVICE_DEFAULTS = {
    "cuda": {
        "pool_size": 60000,
        "steps_vae": 1500,
        "batch_size_vae": 128,
        "lr_vae": 1e-3,
        "steps_diffusion": 30000,
        "batch_size": 256,
        "lr": 5e-4,
        "ema_decay": 0.9995,
        "checkpoint_minutes": 1.5,
        "log_seconds": 15.0,
        "eval_pairs": 96,
        "eval_final_pairs": 252,
        "eval_grid": "20x3,20x5,30x5,30x7.5",
        "eval_batch": 256,
    },
    "cpu": {
        "pool_size": 8000,
        "steps_vae": 1500,
        "batch_size_vae": 16,
        "lr_vae": 1e-3,
        "steps_diffusion": 12000,
        "batch_size": 16,
        "lr": 3e-4,
        "ema_decay": 0.999,
        "checkpoint_minutes": 10.0,
        "log_seconds": 60.0,
        "eval_pairs": 48,
        "eval_final_pairs": 252,
        "eval_grid": "20x5,30x5,30x7.5",
        "eval_batch": 32,
    },
}


@dataclass
class RecipeConfig:
    out: Path
    work_dir: Path | None = None
    device: str = "auto"
    architecture: str = "full"
    seed: int = 0
    image_size: int = 128
    workers: int | None = None
    pool_size: int | None = None
    captions_per_language: int = 2
    tokenizer_scenes: int = 20000
    vocab_size: int | None = None
    merge_han_characters: bool = False
    steps_vae: int | None = None
    batch_size_vae: int | None = None
    lr_vae: float | None = None
    kl_weight: float = 1e-5
    vae_foreground_weight: float = 4.0
    steps_diffusion: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    lr_text_encoder: float | None = None
    language_weights: str | None = None
    warmup_steps: int = 200
    ema_decay: float | None = None
    caption_dropout: float = 0.1
    min_snr_gamma: float | None = 5.0
    timestep_shift: float = 1.0
    time_budget_minutes: float | None = None
    checkpoint_minutes: float | None = None
    log_seconds: float | None = None
    eval_pairs: int | None = None
    eval_final_pairs: int | None = None
    eval_seeds: int = 2
    eval_grid: str | None = None
    eval_batch: int | None = None
    eval_split: str = "heldout"
    skip_eval: bool = False
    resume: bool = False
    init_from: Path | None = None
    command: str = ""

    def resolved(self) -> RecipeConfig:
        """A copy with every None filled from the device defaults."""
        from ..devices import resolve_device

        dev = resolve_device(self.device)
        defaults = DEVICE_DEFAULTS["cuda" if dev.type == "cuda" else "cpu"]
        arch = ARCHITECTURES[self.architecture]
        values = {k: (defaults[k] if getattr(self, k) is None and k in defaults else getattr(self, k))
                  for k in self.__dataclass_fields__}
        values["device"] = str(dev)
        if values["vocab_size"] is None:
            values["vocab_size"] = arch["vocab_size"]
        if values["work_dir"] is None:
            values["work_dir"] = Path(str(self.out).rstrip("/") + ".work")
        values["out"] = Path(self.out)
        values["work_dir"] = Path(values["work_dir"])
        return RecipeConfig(**values)


# ----------------------------------------------------------------------------------------------------------------
# progress output


class Log:
    """Timestamped lines on stdout (flushed: the GPU run captures stdout), tqdm bars only on a terminal."""

    def __init__(self, start: float):
        self.start = start
        self.tty = sys.stdout.isatty()

    def __call__(self, msg: str) -> None:
        t = time.monotonic() - self.start
        print(f"[{int(t // 60):3d}:{t % 60:04.1f}] {msg}", flush=True)

    def bar(self, total: int, desc: str):
        if not self.tty:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)


def _amp_dtype(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


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


# ----------------------------------------------------------------------------------------------------------------
# export


def export_folder(
    out: Path,
    *,
    tokenizer,
    vae,
    text_encoder,
    unet,
    defaults: dict,
    info: dict,
) -> None:
    """Write the diffusers Kolors layout (fp16 variant) into ``out``, replacing what was there only when complete."""
    import copy

    from diffusers import EulerDiscreteScheduler, KolorsPipeline

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    scheduler = EulerDiscreteScheduler.from_config(KOLORS_SCHEDULER_CONFIG)
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


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def render_readme(info: dict) -> str:
    ev = info.get("eval") or {}
    lines = [
        "# Kolors-shapes: the embedded default model",
        "",
        "A small model of the Kolors architecture (ChatGLM-style text encoder, SDXL-style UNet with Kolors",
        "conditioning, AutoencoderKL), every component trained from scratch by this project's recipe",
        "(`kolors.training.embedded`) on its synthetic bilingual (Chinese/English) shapes dataset. It draws simple",
        "coloured shapes; it is a working default and a test fixture, not a general image model.",
        "",
        "Folder layout: the diffusers Kolors layout (`model_index.json`, `scheduler/`, `text_encoder/`, `tokenizer/`,",
        "`unet/`, `vae/`, fp16 weights as the `fp16` variant); it loads with `KolorsPipeline.from_pretrained(folder,",
        'variant="fp16")` and with this project\'s loader.',
        "",
        "| | |",
        "| --- | --- |",
        f"| native resolution | {info['width']}×{info['height']} px |",
        f"| defaults | {info['defaults']['steps']} steps, guidance {info['defaults']['guidance']:g} "
        "(`kolors_defaults.json`) |",
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
        pairs = max((v.get("n", 0) for v in ev["per_language"].values()), default=0) // max(1, ev.get("seeds", 1))
        lines += [
            f"Held-out evaluation: {pairs} prompt pairs (the same scene in English and Chinese; colour/shape/size/"
            "position combinations and wordings never seen in training), "
            f"{ev.get('seeds', 2)} seeds each, scored by the automatic checker (`kolors.evaluation.shapes_checker`):",
            "",
            "| language | colour right | shape right | both | images |",
            "| --- | --- | --- | --- | --- |",
        ]
        for lang, v in ev["per_language"].items():
            lines.append(f"| {lang} | {v['colour']:.1%} | {v['shape']:.1%} | {v.get('both', 0):.1%} | {v['n']} |")
        lines.append("")
        lines.append(f"(at {ev['steps']} steps, guidance {ev['guidance']:g})")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# the recipe


@dataclass
class RecipeResult:
    out: Path
    history: list[dict] = field(default_factory=list)  # diffusion log points: step, loss, fixed_loss, lr
    eval: list[dict] = field(default_factory=list)
    defaults: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def run(config: RecipeConfig) -> RecipeResult:
    start = time.monotonic()
    cfg = config.resolved()
    log = Log(start)
    device = torch.device(cfg.device)
    arch = ARCHITECTURES[cfg.architecture]
    work = cfg.work_dir
    work.mkdir(parents=True, exist_ok=True)
    budget = cfg.time_budget_minutes * 60 if cfg.time_budget_minutes else None
    # Time kept back at the end of the budget for the final export and the evaluation.
    reserve = 0.0
    if budget:
        reserve = min(0.25 * budget, (60.0 if device.type == "cuda" else 0.15 * budget) if not cfg.skip_eval else 10.0)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    log(f"device {device}, architecture {cfg.architecture}, work dir {work}, out {cfg.out}")
    result = RecipeResult(out=cfg.out)

    # 1. tokenizer ----------------------------------------------------------------------------------------------
    latents_file = work / "latents.pt"
    tok_dir, vae_dir = work / "tokenizer", work / "vae"
    if cfg.resume and (tok_dir / "tokenizer.model").is_file():
        tokenizer = load_tokenizer(tok_dir)
        log(f"tokenizer: resumed from {tok_dir}")
    else:
        corpus = caption_corpus(cfg.tokenizer_scenes, seed=cfg.seed)
        tokenizer = train_tokenizer(corpus, tok_dir, vocab_size=cfg.vocab_size,
                                    han_characters=not cfg.merge_han_characters)
        log(f"tokenizer: {len(tokenizer)} ids (SentencePiece BPE, byte fallback) from {len(corpus)} captions "
            f"→ {tok_dir}")
    vocab = padded_vocab_size(tokenizer)

    # 2. pool ----------------------------------------------------------------------------------------------------
    have_latents = cfg.resume and latents_file.is_file() and (vae_dir / "config.json").is_file()
    pool: Pool | None = None
    if not have_latents:
        t0 = time.monotonic()
        pool = render_pool(cfg.pool_size, tokenizer_dir=tok_dir, split="train", size=cfg.image_size, seed=cfg.seed,
                           captions_per_language=cfg.captions_per_language, workers=cfg.workers)
        log(f"pool: {len(pool)} scenes rendered, {len(LANGUAGES)}×{cfg.captions_per_language} captions each "
            f"tokenized, in {time.monotonic() - t0:.1f}s")

    # 3. vae -----------------------------------------------------------------------------------------------------
    from diffusers import AutoencoderKL

    vae_info: dict = {}
    if have_latents:
        vae = AutoencoderKL.from_pretrained(str(vae_dir))
        vae_info = json.loads((work / "vae_info.json").read_text()) if (work / "vae_info.json").is_file() else {}
        log(f"vae: resumed from {vae_dir}")
    elif cfg.init_from is not None:
        assert pool is not None
        vae = AutoencoderKL.from_pretrained(str(Path(cfg.init_from) / "vae"), **_variant(Path(cfg.init_from) / "vae"))
        vae = vae.float()
        images = pool_to_tensor(pool.images)
        means, stds = encode_images(vae, images, device=device, batch_size=256 if device.type == "cuda" else 32)
        vae_info = {"steps": 0, "initialised_from": str(cfg.init_from),
                    "scaling_factor": float(vae.config.scaling_factor)}
        log(f"vae: kept from {cfg.init_from} (scaling_factor {vae.config.scaling_factor}); pool encoded")
        save_vae_stage(work, vae, vae_info, means, stds, pool)
        del images
    else:
        assert pool is not None
        vae = build_vae(arch["vae"], cfg.image_size)
        images = pool_to_tensor(pool.images)
        if device.type == "cuda":
            images = images.to(device)
        g = torch.Generator().manual_seed(cfg.seed + 1)
        bar = log.bar(cfg.steps_vae, "vae")
        last_print = [time.monotonic()]

        def vae_log(step: int, m: dict) -> None:
            if bar is not None:
                bar.n = step
                bar.set_postfix(l1=f"{m['l1']:.4f}", psnr=f"{m['psnr']:.1f}")
                bar.refresh()
            elif time.monotonic() - last_print[0] >= cfg.log_seconds or step == cfg.steps_vae:
                last_print[0] = time.monotonic()
                log(f"vae step {step}/{cfg.steps_vae}: l1 {m['l1']:.4f} psnr {m['psnr']:.2f} kl {m['kl']:.3f}")

        vae_deadline = start + 0.25 * budget if budget else None
        t0 = time.monotonic()
        metrics = train_vae(
            vae, images, steps=cfg.steps_vae, batch_size=cfg.batch_size_vae, lr=cfg.lr_vae, kl_weight=cfg.kl_weight,
            foreground_weight=cfg.vae_foreground_weight,
            device=device, amp_dtype=_amp_dtype(device), generator=g, deadline=vae_deadline, log=vae_log,
            log_every=max(1, min(50, cfg.steps_vae // 10)),
        )
        if bar is not None:
            bar.close()
        vae_info = {"steps": metrics["steps"], "seconds": time.monotonic() - t0, "l1": metrics["l1"],
                    "psnr": metrics["psnr"]}
        log(f"vae: {metrics['steps']} steps in {vae_info['seconds']:.0f}s, l1 {metrics['l1']:.4f}, "
            f"psnr {metrics['psnr']:.2f} dB")
        # Latents of the whole pool (posterior mean and std), then the scaling factor and the fp16 check.
        means, stds = encode_images(vae, images, device=device, batch_size=256 if device.type == "cuda" else 32)
        sf = measure_scaling_factor(means, stds)
        vae.register_to_config(scaling_factor=sf)
        probe = means[:8].float() + stds[:8].float() * torch.randn(means[:8].shape)
        fp16 = check_fp16_decode(vae, probe, device=device)
        vae.register_to_config(force_upcast=not fp16["safe"])
        vae_info.update(scaling_factor=sf, fp16=fp16)
        log(f"vae: scaling_factor {sf}, latent mean {float(means.float().mean()):.3f}; fp16 decode: peak activation "
            f"{fp16['peak_activation']:.1f}, max diff {fp16['max_abs_diff_fp16']} → force_upcast {not fp16['safe']}")
        vae_info["reconstruction_check"] = reconstruction_check(vae, cfg, device)
        rc = vae_info["reconstruction_check"]
        if rc:
            log(f"vae: checker on reconstructions of {rc['n']} held-out renders: colour {rc['colour']:.1%}, "
                f"shape {rc['shape']:.1%}")
        save_vae_stage(work, vae, vae_info, means, stds, pool)
        del images
    vae = vae.float().cpu().eval()
    cache = torch.load(latents_file, weights_only=False)
    means, stds = cache["means"], cache["stds"]
    pool = None  # the images are not needed any more
    scaling_factor = float(vae.config.scaling_factor)

    # 4. diffusion -----------------------------------------------------------------------------------------------
    te = build_text_encoder(arch["text_encoder"], vocab, seed=cfg.seed + 2)
    unet = build_unet(arch["unet"], text_hidden_size=arch["text_encoder"].hidden_size, image_size=cfg.image_size,
                      seed=cfg.seed + 3)
    if cfg.init_from is not None and not (cfg.resume and (work / "diffusion.pt").is_file()):
        carried = initialise_from(Path(cfg.init_from), tokenizer, te, unet)
        log(f"diffusion: UNet and text encoder initialised from {cfg.init_from} ({carried['rows_carried']}/"
            f"{carried['rows']} embedding rows carried over by token text)")
    params = {"text_encoder": count_params(te), "unet": count_params(unet), "vae": count_params(vae)}
    log("parameters: " + ", ".join(f"{k} {v / 1e6:.2f} M ({2 * v / 1e6:.1f} MB fp16)" for k, v in params.items()))
    trainer = DiffusionTrainer(
        unet, te, image_size=cfg.image_size, device=device, lr=cfg.lr, lr_text_encoder=cfg.lr_text_encoder,
        warmup_steps=cfg.warmup_steps,
        amp_dtype=_amp_dtype(device), ema_decay=cfg.ema_decay, min_snr_gamma=cfg.min_snr_gamma,
        timestep_shift=cfg.timestep_shift,
    )
    ckpt_file = work / "diffusion.pt"
    elapsed_before = 0.0
    if cfg.resume and ckpt_file.is_file():
        state = torch.load(ckpt_file, map_location=device, weights_only=False)
        trainer.load_state_dict(state["trainer"])
        result.history = state.get("history", [])
        elapsed_before = state.get("elapsed", 0.0)
        log(f"diffusion: resumed at step {trainer.step_count}")
    table = CaptionTokens(tokenizer, cache, device=device)
    del cache
    lat_mean, lat_std = means.to(device), stds.to(device)
    n_items = lat_mean.shape[0]
    g = torch.Generator(device=device).manual_seed(cfg.seed + 4 + trainer.step_count)

    # A fixed validation batch: the first items, languages alternating, no dropout.
    k = min(64, n_items)
    val_items = torch.arange(k, device=device)
    val_tokens = table.lookup(val_items, val_items % len(LANGUAGES), torch.zeros_like(val_items))
    val = {"latents": lat_mean[:k].float() * scaling_factor, **val_tokens}

    steps_total = cfg.steps_diffusion
    language_weights = parse_language_weights(cfg.language_weights)
    deadline = start + budget - reserve if budget else None
    t_diff = time.monotonic()
    last_ckpt = time.monotonic()
    last_print = time.monotonic()
    run_loss = torch.zeros((), device=device)
    run_n = 0
    status = "complete"
    defaults_prelim = {"width": cfg.image_size, "height": cfg.image_size, "steps": 25, "guidance": 5.0}

    def info_dict(status_: str, defaults: dict, ev: dict | None) -> dict:
        return {
            "width": cfg.image_size, "height": cfg.image_size, "defaults": defaults, "params": params,
            "status": status_, "steps_diffusion": trainer.step_count, "batch_size": cfg.batch_size,
            "steps_vae": vae_info.get("steps", cfg.steps_vae), "batch_size_vae": cfg.batch_size_vae,
            "minutes": (time.monotonic() - start + elapsed_before) / 60, "hardware": hardware_description(device),
            "command": cfg.command or "python -m kolors.training.embedded --out OUT", "eval": ev,
            "vae": vae_info, "pool_size": n_items, "caption_dropout": cfg.caption_dropout,
            "init_from": _init_note(cfg.init_from),
        }

    def save_checkpoint(final: bool) -> None:
        torch.save({"trainer": trainer.state_dict(), "history": result.history,
                    "elapsed": elapsed_before + time.monotonic() - start}, ckpt_file.with_suffix(".tmp"))
        ckpt_file.with_suffix(".tmp").replace(ckpt_file)
        if not final:
            u, t = trainer.ema_copies()
            info = info_dict(f"partial (checkpoint at step {trainer.step_count})", defaults_prelim, None)
            export_folder(cfg.out, tokenizer=tokenizer, vae=vae, text_encoder=t, unet=u, defaults=defaults_prelim,
                          info=info)

    bar = log.bar(steps_total, "diffusion")
    if bar is not None:
        bar.update(trainer.step_count)
    log(f"diffusion: {steps_total} steps × batch {cfg.batch_size}" + (
        f", stopping by {(deadline - start) / 60:.1f} min" if deadline else ""))
    log_every = 10
    first_step = trainer.step_count
    while trainer.step_count < steps_total:
        now = time.monotonic()
        if deadline is not None and now > deadline:
            status = "stopped by the time budget"
            break
        progress = trainer.step_count / steps_total
        if budget:
            progress = max(progress, (now - start) / (budget - reserve))
        items = torch.randint(0, n_items, (cfg.batch_size,), generator=g, device=device)
        lat = (lat_mean[items].float() + lat_std[items].float() * torch.randn(
            (cfg.batch_size, *lat_mean.shape[1:]), generator=g, device=device)) * scaling_factor
        tokens = table.sample(items, dropout=cfg.caption_dropout, generator=g, language_weights=language_weights)
        loss, lr = trainer.step(lat, tokens["input_ids"], tokens["attention_mask"], tokens["position_ids"],
                                progress=progress)
        run_loss += loss
        run_n += 1
        step = trainer.step_count
        if bar is not None:
            bar.update(1)
        if step % log_every == 0 or step == steps_total:
            now = time.monotonic()
            if now - last_print >= cfg.log_seconds or step == steps_total or step == log_every:
                mean_loss = float(run_loss) / max(1, run_n)
                run_loss.zero_()
                run_n = 0
                fixed = trainer.fixed_loss(val)
                rate = (step - first_step) / max(1e-6, now - t_diff)
                result.history.append({"step": step, "loss": mean_loss, "fixed_loss": fixed, "lr": lr,
                                       "seconds": now - t_diff})
                msg = f"diffusion step {step}/{steps_total}: loss {mean_loss:.4f} fixed {fixed:.4f} lr {lr:.2e}"
                if bar is not None:
                    bar.set_postfix(loss=f"{mean_loss:.4f}", fixed=f"{fixed:.4f}")
                else:
                    log(msg + f" ({rate:.2f} steps/s)")
                last_print = now
            if now - last_ckpt >= cfg.checkpoint_minutes * 60:
                save_checkpoint(final=False)
                last_ckpt = time.monotonic()
                log(f"checkpoint at step {step} → {cfg.out}")
    if bar is not None:
        bar.close()
    diff_seconds = time.monotonic() - t_diff
    fixed = trainer.fixed_loss(val)
    result.history.append({"step": trainer.step_count, "loss": float(run_loss) / max(1, run_n) if run_n else None,
                           "fixed_loss": fixed, "lr": None, "seconds": diff_seconds})
    log(f"diffusion: {status} at step {trainer.step_count} after {diff_seconds:.0f}s "
        f"({(trainer.step_count - first_step) / max(diff_seconds, 1e-6):.2f} steps/s this run), fixed loss {fixed:.4f}")
    save_checkpoint(final=True)

    # 5. export + 6. eval ----------------------------------------------------------------------------------------
    u, t = trainer.ema_copies()
    trainer.optimizer = None  # free the optimizer state before evaluating
    if device.type == "cuda":
        torch.cuda.empty_cache()
    info = info_dict(status, defaults_prelim, None)
    export_folder(cfg.out, tokenizer=tokenizer, vae=vae, text_encoder=t, unet=u, defaults=defaults_prelim,
                  info=info)
    defaults = defaults_prelim
    best = None
    if not cfg.skip_eval:
        best, evals = evaluate_folder(cfg, device, log)
        result.eval = [e.as_dict() for e in evals]
        if best is not None:
            defaults = {"width": cfg.image_size, "height": cfg.image_size, "steps": best.steps,
                        "guidance": best.guidance}
    verify = verify_on_cpu(cfg.out)
    log(f"verified: diffusers KolorsPipeline.from_pretrained(variant='fp16') loads the folder and generates on CPU "
        f"in fp32 ({verify['shape']}, {verify['seconds']:.1f}s)")
    ev = None
    if best is not None:
        ev = best.as_dict()
        ev["seeds"] = cfg.eval_seeds
    info = info_dict(status, defaults, ev)
    # Rewrite only the small files: the weights in the folder are already the final ones.
    (cfg.out / "kolors_defaults.json").write_text(json.dumps(defaults, indent=2) + "\n", encoding="utf-8")
    info["size_mb"] = folder_size(cfg.out) / 1e6
    (cfg.out / "README.md").write_text(render_readme(info), encoding="utf-8")
    info["size_mb"] = folder_size(cfg.out) / 1e6
    (work / "result.json").write_text(json.dumps({"info": info, "eval": result.eval, "history": result.history},
                                                 indent=2, default=str))
    result.defaults, result.info = defaults, info
    log(f"done in {(time.monotonic() - start) / 60:.1f} min: {cfg.out} ({info['size_mb']:.1f} MB), "
        f"defaults {defaults}")
    return result


def parse_language_weights(text: str | None) -> tuple[float, ...] | None:
    """``"en=1,zh=3"`` → weights in ``LANGUAGES`` order (missing languages 0); None → None (uniform)."""
    if not text:
        return None
    given = {}
    for part in text.split(","):
        lang, _, value = part.partition("=")
        if lang.strip() not in LANGUAGES or not value:
            raise ValueError(f"--language-weights: expected e.g. en=1,zh=3 (languages {', '.join(LANGUAGES)}), "
                             f"got {text!r}")
        given[lang.strip()] = float(value)
    weights = tuple(given.get(lang, 0.0) for lang in LANGUAGES)
    if sum(weights) <= 0 or min(weights) < 0:
        raise ValueError(f"--language-weights must be non-negative with a positive sum, got {text!r}")
    return weights


def save_vae_stage(work: Path, vae, vae_info: dict, means: torch.Tensor, stds: torch.Tensor, pool: Pool) -> None:
    """The VAE, its notes and the pool's latents + tokens: what ``--resume`` needs to skip stages 2 and 3."""
    vae.cpu().save_pretrained(str(work / "vae"))
    (work / "vae_info.json").write_text(json.dumps(vae_info, indent=2))
    torch.save({"means": means, "stds": stds, "input_ids": torch.from_numpy(pool.input_ids),
                "attention_mask": torch.from_numpy(pool.attention_mask),
                "position_ids": torch.from_numpy(pool.position_ids)}, work / "latents.pt")


def _variant(component_dir: Path) -> dict:
    """``variant="fp16"`` when the component folder has only fp16 weight files (as this recipe exports them)."""
    names = [p.name for p in Path(component_dir).iterdir()]
    plain = any(n in ("diffusion_pytorch_model.safetensors", "model.safetensors") for n in names)
    return {} if plain or not any(".fp16." in n for n in names) else {"variant": "fp16"}


def _init_note(folder: Path | None) -> dict | None:
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
def initialise_from(folder: Path, tokenizer, text_encoder, unet) -> dict:
    """Copy a saved model's UNet and text encoder into freshly built ones of the same architecture.

    The tokenizers may differ: each embedding row is carried over when the new tokenizer has a token of the same
    text; rows of new tokens keep their fresh initialisation.
    """
    from diffusers import UNet2DConditionModel

    from ..models.chatglm import ChatGLMModel
    from .tokenizer import load_tokenizer

    folder = Path(folder)
    old_unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"), **_variant(folder / "unet"))
    unet.load_state_dict({k: v.float() for k, v in old_unet.state_dict().items()})
    old_te = ChatGLMModel.from_pretrained(str(folder / "text_encoder"), **_variant(folder / "text_encoder"))
    old_state = {k: v.float() for k, v in old_te.state_dict().items()}
    emb_key = "embedding.word_embeddings.weight"
    new_emb = text_encoder.state_dict()[emb_key].clone()
    old_vocab = load_tokenizer(folder / "tokenizer").get_vocab()
    carried = 0
    for token, new_id in tokenizer.get_vocab().items():
        old_id = old_vocab.get(token)
        if old_id is not None and old_id < old_state[emb_key].shape[0] and new_id < new_emb.shape[0]:
            new_emb[new_id] = old_state[emb_key][old_id]
            carried += 1
    old_state[emb_key] = new_emb
    # The LM head is unused by Kolors; it keeps the new vocabulary's shape.
    old_state["output_layer.weight"] = text_encoder.state_dict()["output_layer.weight"]
    text_encoder.load_state_dict(old_state)
    return {"rows": len(tokenizer.get_vocab()), "rows_carried": carried}


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


@torch.no_grad()
def reconstruction_check(vae, cfg: RecipeConfig, device: torch.device, n: int = 128) -> dict:
    """Checker accuracy on VAE reconstructions of held-out renders: the ceiling the diffusion model works under."""
    try:
        from .evaluate import check_images
        from .vae import to_model_range

        shapes = shapes_module()
        rng = np.random.default_rng([cfg.seed, 99])
        images, _caps, scenes = shapes.batch(rng, n, cfg.eval_split, cfg.image_size)
        x = to_model_range(torch.from_numpy(images).to(device))
        vae.to(device).eval()
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
        rec = ((rec.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        checks = check_images(rec, scenes)
    except ImportError:
        return {}
    return {"n": n, "colour": float(checks[:, 0].mean()), "shape": float(checks[:, 1].mean())}


def evaluate_folder(cfg: RecipeConfig, device: torch.device, log: Log):
    """Load the exported folder with diffusers' KolorsPipeline and run the held-out grid; returns (best, all)."""
    from diffusers import KolorsPipeline

    from .evaluate import EvalSpec, evaluate

    pipe = KolorsPipeline.from_pretrained(str(cfg.out), variant="fp16", dtype=torch.float32).to(device)
    spec = EvalSpec(pairs=cfg.eval_pairs, seeds=tuple(range(cfg.eval_seeds)), split=cfg.eval_split,
                    batch_size=cfg.eval_batch)
    grid = []
    for item in cfg.eval_grid.split(","):
        s, g = item.strip().split("x")
        grid.append((int(s), float(g)))
    results = []
    for steps, guidance in grid:
        try:
            results.append(evaluate(pipe, spec, steps=steps, guidance=guidance, device=device, log=log))
        except ImportError as exc:  # the checker is missing: nothing to choose defaults with
            log(f"eval skipped: {exc}")
            return None, results
    # Best score; among scores within half a point, the fewest steps.
    top = max(r.score for r in results)
    best = min((r for r in results if r.score >= top - 0.005), key=lambda r: (r.steps, -r.score))
    log("eval best of the grid: " + best.line())
    if cfg.eval_final_pairs and cfg.eval_final_pairs > cfg.eval_pairs:
        final = replace(spec, pairs=cfg.eval_final_pairs)
        best = evaluate(pipe, final, steps=best.steps, guidance=best.guidance, device=device, log=log)
        best.final = True
        results.append(best)
    return best, results


# ----------------------------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kolors.training.embedded",
        description="Train the embedded Kolors-shapes model (all stages) and save it in the diffusers Kolors layout.",
    )
    p.add_argument("--out", required=True, type=Path, help="output model folder")
    p.add_argument("--work-dir", type=Path, help="checkpoints and caches (default: OUT.work)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--architecture", default="full", choices=sorted(ARCHITECTURES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--workers", type=int, help="processes rendering the pool (default: all cores)")
    p.add_argument("--pool-size", type=int, help="scenes rendered once and reused")
    p.add_argument("--captions-per-language", type=int, default=2, help="wordings kept per scene and language")
    p.add_argument("--tokenizer-scenes", type=int, default=20000, help="scenes captioned to train the tokenizer")
    p.add_argument("--vocab-size", type=int)
    p.add_argument("--merge-han-characters", action="store_true",
                   help="let BPE merge Han characters into multi-character pieces (the recipe before 2026-11-24)")
    p.add_argument("--steps-vae", type=int)
    p.add_argument("--batch-size-vae", type=int)
    p.add_argument("--lr-vae", type=float)
    p.add_argument("--kl-weight", type=float, default=1e-5)
    p.add_argument("--vae-foreground-weight", type=float, default=4.0,
                   help="extra weight of shape pixels in the VAE reconstruction loss")
    p.add_argument("--steps-diffusion", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--lr-text-encoder", type=float, help="peak learning rate of the text encoder (default: --lr)")
    p.add_argument("--language-weights", metavar="en=W,zh=W",
                   help="how often each caption language is drawn (default: equally)")
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--ema-decay", type=float, help="0 disables EMA")
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--min-snr-gamma", type=float, default=5.0, help="0 disables Min-SNR weighting")
    p.add_argument("--timestep-shift", type=float, default=1.0,
                   help="draw training timesteps shifted towards high noise (1: uniform; 3: three quarters in the noisier half)")
    p.add_argument("--time-budget-minutes", type=float, help="wall-clock limit of the whole run")
    p.add_argument("--checkpoint-minutes", type=float)
    p.add_argument("--log-seconds", type=float)
    p.add_argument("--eval-pairs", type=int, help="held-out prompt pairs (en + zh) per grid point")
    p.add_argument("--eval-final-pairs", type=int, help="pairs of the final evaluation at the chosen settings")
    p.add_argument("--eval-seeds", type=int, default=2)
    p.add_argument("--eval-grid", help='STEPSxGUIDANCE list, e.g. "20x5,30x7.5"')
    p.add_argument("--eval-batch", type=int)
    p.add_argument("--eval-split", default="heldout")
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--resume", action="store_true", help="reuse finished stages and the diffusion checkpoint")
    p.add_argument("--init-from", type=Path, metavar="FOLDER",
                   help="start from a model this recipe exported: its VAE is kept (no VAE stage), its UNet and "
                        "text encoder are trained on (embedding rows carried over by token text)")
    return p


def config_from_args(argv: list[str] | None = None) -> RecipeConfig:
    args = build_parser().parse_args(argv)
    values = vars(args)
    if values.get("ema_decay") == 0:
        values["ema_decay"] = 0.0
    if values.get("min_snr_gamma") == 0:
        values["min_snr_gamma"] = None
    argv_used = sys.argv[1:] if argv is None else argv
    values["command"] = "python -m kolors.training.embedded " + " ".join(argv_used)
    return RecipeConfig(**values)


def main(argv: list[str] | None = None) -> int:
    config = config_from_args(argv)
    run(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
