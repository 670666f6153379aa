"""The recipe of the built-in model, stage by stage: ``python -m kolors.recipe --out DIR [...]``.

:class:`RecipeRun` runs the stages in order; each leaves its result in the work folder, so ``--resume`` picks up
where a run stopped:

1. tokenizer   SentencePiece BPE on training captions of both languages, saved as a ChatGLM tokenizer
2. pool        the synthetic bilingual scenes rendered once, their captions tokenized (parallel workers)
3. autoencoder AutoencoderKL (factor 8, 4 latent channels) + its scaling factor, or the ``--init-from`` model's;
               the pool encoded to latents
4. diffusion   ChatGLM-style text encoder + SDXL-style UNet trained jointly with the Kolors conditioning,
               exported periodically (a partial model to look at while it trains)
5. finish      the final export, the held-out evaluation grid (→ ``kolors_defaults.json``), a diffusers load
               check, the README

Ctrl-C or SIGTERM during stage 4 saves a checkpoint at the last finished step before the run ends (exit 130 / 143);
every draw of a step (items, latent samples, captions, timesteps, noise) is seeded by the run's seed and the step, so
``--resume`` with the same options continues as if the run had never stopped (when ``--steps-diffusion`` ends it;
under ``--time-budget-minutes`` the learning-rate schedule follows the clock, and a resumed run's budget is new).
The options that made the pool are kept beside it (``pool.json``); a resume that asks for another pool is refused.
The options the steps are trained with are kept in the checkpoint; a resume that changes one (a lower ``--lr`` to
finish) says which in its log.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import KolorsError
from ..files import atomic_file, write_text
from ..signals import deferred
from . import PROG
from .architecture import build_text_encoder, build_unet, scheduler_config
from .autoencoder import (
    build_vae,
    check_fp16_decode,
    encode_images,
    measure_scaling_factor,
    pool_to_tensor,
    train_vae,
)
from .evaluate import EvalSpec, evaluate_folder, reconstruction_check
from .export import check_destination, count_params, export_folder, folder_size, hardware_description, init_note, \
    render_readme, verify_on_cpu
from .initialise import check_fits, initialise_from, weights_variant
from .pool import (CONTRAST_KEYS, LANGUAGES, TOKEN_KEYS, CaptionTokens, Pool, caption_corpus, latent_foreground,
                   render_pool)
from .weighting import cell_weight, fit_threshold
from .options import RecipeConfig, architecture, config_from_args, parse_grid, parse_language_weights, scene_mix
from .tokenizer import load_tokenizer, padded_vocab_size, train_tokenizer
from .trainer import DiffusionTrainer
from .vocabulary import VOCABULARY_FILE, write_vocabulary

__all__ = ["RecipeResult", "RecipeRun", "run", "main"]

POOL_OPTIONS_FILE = "pool.json"
# What the diffusion steps are trained with: kept in the checkpoint, so that a --resume that changes one says so
# (a change may be meant, e.g. a lower --lr to finish; the pool's own options are refused instead).
TRAINING_OPTIONS = ("batch_size", "lr", "lr_text_encoder", "warmup_steps", "ema_decay", "caption_dropout",
                    "min_snr_gamma", "timestep_shift", "noise_offset", "pyramid_noise", "prediction_type",
                    "zero_terminal_snr", "layout_warmup", "language_weights", "foreground_weight", "foreground_from",
                    "binding_contrast", "binding_margin", "attention_grounding", "grounding_noise_power")
# Pool options added after pool.json was: what a pool.json without them was made with.
POOL_OPTIONS_BEFORE = {"scene_mix": None, "count_mix": None, "pair_mix": None, "contrast_captions": False,
                       "object_grounding": False}


def _changed_options(before: dict | None, now: dict) -> str:
    """``--lr 0.0002 → 0.0001, …``: the options of ``now`` that differ from ``before`` (a checkpoint from before
    the options were kept: none known)."""
    def shown(value) -> str:
        return f"{value:g}" if isinstance(value, float) else "none" if value is None else str(value)

    return ", ".join(f"--{key.replace('_', '-')} {shown(before[key])} → {shown(value)}"
                     for key, value in now.items() if before is not None and key in before and before[key] != value)


class Log:
    """Timestamped lines on stdout (flushed: a background run's log is read while it runs), tqdm bars on a tty."""

    def __init__(self, start: float):
        self.start = start
        self.tty = sys.stdout.isatty()

    def __call__(self, msg: str) -> None:
        tenths = round((time.monotonic() - self.start) * 10)  # rounded once: 59.96 s is 1:00.0, not 0:60.0
        print(f"[{tenths // 600:3d}:{tenths % 600 / 10:04.1f}] {msg}", flush=True)

    def bar(self, total: int, desc: str):
        if not self.tty:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)


@dataclass
class RecipeResult:
    out: Path
    history: list[dict] = field(default_factory=list)  # diffusion log points: step, loss, fixed_loss, lr
    eval: list[dict] = field(default_factory=list)
    defaults: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


@dataclass
class Latents:
    """The pool as the diffusion stage reads it: posterior mean/std of every scene and its caption tokens."""

    means: torch.Tensor
    stds: torch.Tensor
    tokens: dict[str, torch.Tensor]
    scaling_factor: float
    layout: torch.Tensor | None = None  # which items are layout scenes (bool); None: a pool from before the option
    foreground: torch.Tensor | None = None  # bool N×h×w: latent cells holding a shape; None: a pool from before
    object_masks: torch.Tensor | None = None  # bool N×objects×h×w (--attention-grounding); None: a pool without


class RecipeRun:
    """One run of the recipe: its settings, clock, log and work folder, and the stages as methods."""

    def __init__(self, config: RecipeConfig):
        self.start = time.monotonic()
        self.cfg = config.resolved()
        self.log = Log(self.start)
        self.device = torch.device(self.cfg.device)
        self.arch = architecture(self.cfg)
        self.scheduler_config = scheduler_config(self.cfg.prediction_type, self.cfg.zero_terminal_snr)
        self.work = self.cfg.work_dir
        budget = self.cfg.time_budget_minutes
        self.budget = budget * 60 if budget else None
        # Time kept back at the end of the budget for the final export and the evaluation.
        self.reserve = 0.0
        if self.budget:
            keep = 10.0 if self.cfg.skip_eval else (60.0 if self.device.type == "cuda" else 0.15 * self.budget)
            self.reserve = min(0.25 * self.budget, keep)
        self.result = RecipeResult(out=self.cfg.out)
        self.vae_info: dict = {}
        self.elapsed_before = 0.0  # training time of the run this one resumes
        self.status = "complete"
        self.preliminary_defaults = {"width": self.cfg.image_size, "height": self.cfg.image_size, "steps": 25,
                                     "guidance": 5.0}

    def run(self) -> RecipeResult:
        cfg = self.cfg
        check_destination(cfg.out, cfg.init_from)
        if cfg.init_from is not None and not (cfg.resume and (self.work / "diffusion.pt").is_file()):
            check_fits(cfg.init_from, self.arch)
        self.work.mkdir(parents=True, exist_ok=True)
        for name in ("diffusion.pt", "latents.pt"):  # a file half-written when a run was killed -9
            for stale in self.work.glob(f".{name}.*.tmp"):
                stale.unlink()
        torch.manual_seed(cfg.seed)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        self.log(f"device {self.device}, architecture {cfg.architecture}, work dir {self.work}, out {cfg.out}")
        tokenizer = self.tokenizer_stage()
        resumable = (cfg.resume and (self.work / "latents.pt").is_file()
                     and (self.work / "vae" / "config.json").is_file())
        if resumable:
            self._check_pool_options()
        pool = None if resumable else self.pool_stage()
        vae, latents = self.autoencoder_stage(pool)
        del pool  # the images are not needed any more
        trainer = self.diffusion_stage(tokenizer, vae, latents)
        return self.finish_stage(tokenizer, vae, trainer)

    # 1. tokenizer -----------------------------------------------------------------------------------------------
    def tokenizer_stage(self):
        cfg, folder = self.cfg, self.work / "tokenizer"
        if cfg.resume and (folder / "tokenizer.model").is_file():
            self.log(f"tokenizer: resumed from {folder}")
            return load_tokenizer(folder)
        corpus = caption_corpus(cfg.tokenizer_scenes, seed=cfg.seed)
        write_vocabulary(self.work, corpus)
        tokenizer = train_tokenizer(corpus, folder, vocab_size=cfg.vocab_size,
                                    han_characters=not cfg.merge_han_characters)
        self.log(f"tokenizer: {len(tokenizer)} ids (SentencePiece BPE, byte fallback) from {len(corpus)} captions "
                 f"→ {folder}")
        return tokenizer

    # 2. pool ----------------------------------------------------------------------------------------------------
    def pool_stage(self) -> Pool:
        cfg, t0 = self.cfg, time.monotonic()
        pool = render_pool(cfg.pool_size, tokenizer_dir=self.work / "tokenizer", split="train", size=cfg.image_size,
                           seed=cfg.seed, captions_per_language=cfg.captions_per_language, workers=cfg.workers,
                           stated_position=cfg.stated_position, layout_share=cfg.layout_share,
                           layout_backgrounds=cfg.layout_background, mix=scene_mix(cfg),
                           twins=cfg.binding_twin if cfg.binding_contrast > 0 else (),
                           grounding_factor=self._vae_factor() if cfg.attention_grounding > 0 else None)
        self.log(f"pool: {len(pool)} scenes rendered, {len(LANGUAGES)}×{cfg.captions_per_language} captions each "
                 f"tokenized, in {time.monotonic() - t0:.1f}s")
        return pool

    def _vae_factor(self) -> int:
        return 2 ** (len(self.arch["vae"].block_out_channels) - 1)

    def _pool_options(self) -> dict:
        """The options that make the pool (and, with the seed, every draw from it): kept beside its latents."""
        cfg, mix = self.cfg, scene_mix(self.cfg)
        return {"seed": cfg.seed, "pool_size": cfg.pool_size, "image_size": cfg.image_size,
                "captions_per_language": cfg.captions_per_language, "stated_position": cfg.stated_position,
                "layout_share": cfg.layout_share, "layout_background": list(cfg.layout_background),
                "scene_mix": mix.kinds, "count_mix": mix.counts, "pair_mix": mix.pairs,
                "contrast_captions": list(cfg.binding_twin) if cfg.binding_contrast > 0 else False,
                "object_grounding": cfg.attention_grounding > 0}

    def _check_pool_options(self) -> None:
        """``--resume`` reuses the rendered pool: options asking for another pool are refused, not ignored."""
        recorded_file = self.work / POOL_OPTIONS_FILE
        if not recorded_file.is_file():
            self.log(f"pool: its options were not recorded (a pool from before {POOL_OPTIONS_FILE} existed); "
                     "reused as it is")
            return
        try:
            recorded = json.loads(recorded_file.read_text())
        except (ValueError, UnicodeDecodeError):
            raise KolorsError(f"{recorded_file} is not the JSON this recipe writes: remove it to resume without "
                              "checking the pool's options, or give a new --work-dir") from None
        asked = json.loads(json.dumps(self._pool_options()))  # as pool.json holds them (e.g. keys as strings)
        recorded = {**POOL_OPTIONS_BEFORE, **recorded}
        if recorded["contrast_captions"] is True:  # before --binding-twin, every twin was an exchange
            recorded["contrast_captions"] = ["exchange"]
        differ = [k for k in asked if k in recorded and recorded[k] != asked[k]]
        if differ:
            def flag(key, value):
                name = f"--{key.replace('_', '-')}"
                if key == "contrast_captions":  # made by --binding-contrast W > 0, of the kinds of --binding-twin
                    return f"--binding-contrast --binding-twin {' '.join(value)}" if value else "no --binding-contrast"
                if key == "object_grounding":
                    return "--attention-grounding" if value else "no --attention-grounding"
                if value is None:
                    return f"no {name}"
                if isinstance(value, dict):
                    return f"{name} " + ",".join(f"{k}={v:g}" for k, v in value.items())
                return f"{name} " + (" ".join(map(str, value)) if isinstance(value, list) else str(value))
            raise KolorsError(
                f"--resume reuses the pool in {self.work}, made with "
                + ", ".join(flag(k, recorded[k]) for k in differ) + "; this run asks for "
                + ", ".join(flag(k, asked[k]) for k in differ)
                + ": resume with the options it was made with, or give a new --work-dir for a new pool "
                  "(nothing was changed)")

    # 3. autoencoder ---------------------------------------------------------------------------------------------
    def autoencoder_stage(self, pool: Pool | None) -> tuple[torch.nn.Module, Latents]:
        """The VAE (resumed, kept from ``--init-from``, or trained here) and the pool's latents."""
        from diffusers import AutoencoderKL

        cfg, vae_dir = self.cfg, self.work / "vae"
        if pool is None:
            vae = AutoencoderKL.from_pretrained(str(vae_dir))
            info_file = self.work / "vae_info.json"
            self.vae_info = json.loads(info_file.read_text()) if info_file.is_file() else {}
            self.log(f"vae: resumed from {vae_dir}")
        elif cfg.init_from is not None:
            folder = Path(cfg.init_from) / "vae"
            vae = AutoencoderKL.from_pretrained(str(folder), **weights_variant(folder)).float()
            images = pool_to_tensor(pool.images)
            self.vae_info = {"steps": 0, "initialised_from": str(cfg.init_from),
                             "scaling_factor": float(vae.config.scaling_factor)}
            if cfg.vae_finetune_steps:
                import copy

                decoder_only = cfg.vae_finetune_part == "decoder"
                self._train_autoencoder(vae, images, steps=cfg.vae_finetune_steps, decoder_only=decoder_only,
                                        anchor=None if decoder_only else copy.deepcopy(vae))
            means, stds = self._encode_pool(vae, images)
            self.log(f"vae: kept from {cfg.init_from} (scaling_factor {vae.config.scaling_factor}"
                     + (f", continued {cfg.vae_finetune_steps} steps"
                        + (" (decoder only)" if cfg.vae_finetune_part == "decoder" else "")
                        if cfg.vae_finetune_steps else "")
                     + "); pool encoded")
            self._save_autoencoder_stage(vae, means, stds, pool)
        else:
            vae = build_vae(self.arch["vae"], cfg.image_size)
            images = pool_to_tensor(pool.images)
            self._train_autoencoder(vae, images)
            means, stds = self._encode_pool(vae, images)
            self._calibrate_autoencoder(vae, means, stds)
            self._save_autoencoder_stage(vae, means, stds, pool)
        vae = vae.float().cpu().eval()
        cache = torch.load(self.work / "latents.pt", weights_only=False)
        tokens = {k: cache[k] for k in TOKEN_KEYS + CONTRAST_KEYS + ("token_objects",) if k in cache}
        return vae, Latents(cache["means"], cache["stds"], tokens, float(vae.config.scaling_factor),
                            cache.get("layout"), cache.get("foreground"), cache.get("object_masks"))

    def _train_autoencoder(self, vae, images: torch.Tensor, *, steps: int | None = None, anchor=None,
                           decoder_only: bool = False) -> None:
        cfg, log = self.cfg, self.log
        steps = steps or cfg.steps_vae
        if self.device.type == "cuda":
            images = images.to(self.device)
        bar = log.bar(steps, "vae")
        last_print = [time.monotonic()]

        def vae_log(step: int, m: dict) -> None:
            if bar is not None:
                bar.n = step
                bar.set_postfix(l1=f"{m['l1']:.4f}", psnr=f"{m['psnr']:.1f}")
                bar.refresh()
            elif time.monotonic() - last_print[0] >= cfg.log_seconds or step == steps:
                last_print[0] = time.monotonic()
                log(f"vae step {step}/{steps}: l1 {m['l1']:.4f} psnr {m['psnr']:.2f} kl {m['kl']:.3f}")

        t0 = time.monotonic()
        metrics = train_vae(
            vae, images, steps=steps, batch_size=cfg.batch_size_vae, lr=cfg.lr_vae, kl_weight=cfg.kl_weight,
            foreground_weight=cfg.vae_foreground_weight, device=self.device, amp_dtype=self._amp_dtype(),
            generator=torch.Generator().manual_seed(cfg.seed + 1),
            deadline=self.start + 0.25 * self.budget if self.budget else None, log=vae_log,
            log_every=max(1, min(50, steps // 10)), crop=cfg.vae_crop, anchor=anchor, anchor_weight=cfg.vae_anchor,
            decoder_only=decoder_only,
        )
        if bar is not None:
            bar.close()
        continued = anchor is not None or decoder_only
        self.vae_info.update({"steps_continued" if continued else "steps": metrics["steps"],
                              "seconds": time.monotonic() - t0, "l1": metrics["l1"], "psnr": metrics["psnr"]})
        log(f"vae: {metrics['steps']} steps in {self.vae_info['seconds']:.0f}s, l1 {metrics['l1']:.4f}, "
            f"psnr {metrics['psnr']:.2f} dB")

    def _encode_pool(self, vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_images(vae, images, device=self.device, batch_size=256 if self.device.type == "cuda" else 32)

    def _calibrate_autoencoder(self, vae, means: torch.Tensor, stds: torch.Tensor) -> None:
        """The scaling factor and the fp16 check into the VAE's config; the checker on its reconstructions."""
        cfg, log = self.cfg, self.log
        sf = measure_scaling_factor(means, stds)
        vae.register_to_config(scaling_factor=sf)
        probe = means[:8].float() + stds[:8].float() * torch.randn(means[:8].shape)
        fp16 = check_fp16_decode(vae, probe, device=self.device)
        vae.register_to_config(force_upcast=not fp16["safe"])
        self.vae_info.update(scaling_factor=sf, fp16=fp16)
        log(f"vae: scaling_factor {sf}, latent mean {float(means.float().mean()):.3f}; fp16 decode: peak activation "
            f"{fp16['peak_activation']:.1f}, max diff {fp16['max_abs_diff_fp16']} → force_upcast {not fp16['safe']}")
        rc = reconstruction_check(vae, split=cfg.eval_split, image_size=cfg.image_size, seed=cfg.seed,
                                  device=self.device)
        self.vae_info["reconstruction_check"] = rc
        if rc:
            log(f"vae: checker on reconstructions of {rc['n']} held-out renders: colour {rc['colour']:.1%}, "
                f"shape {rc['shape']:.1%}")

    def _save_autoencoder_stage(self, vae, means: torch.Tensor, stds: torch.Tensor, pool: Pool) -> None:
        """The VAE, its notes and the pool's latents + tokens: what ``--resume`` needs to skip stages 2 and 3."""
        vae.cpu().save_pretrained(str(self.work / "vae"))
        (self.work / "vae_info.json").write_text(json.dumps(self.vae_info, indent=2))
        # The options first: a latents.pt is never without the record of the pool it holds.
        write_text(self.work / POOL_OPTIONS_FILE, json.dumps(self._pool_options(), indent=2) + "\n")
        with deferred(), atomic_file(self.work / "latents.pt") as tmp:
            tokens = {k: torch.from_numpy(getattr(pool, k)) for k in TOKEN_KEYS + CONTRAST_KEYS
                      + ("token_objects", "object_masks") if getattr(pool, k) is not None}
            torch.save({"means": means, "stds": stds, **tokens, "layout": torch.from_numpy(pool.layout),
                        "foreground": torch.from_numpy(latent_foreground(pool.images, pool.images.shape[1]
                                                                         // means.shape[-1]))}, tmp)

    # 4. diffusion -----------------------------------------------------------------------------------------------
    def diffusion_stage(self, tokenizer, vae, latents: Latents) -> DiffusionTrainer:
        trainer = self._build_trainer(tokenizer, vae)
        self._train_diffusion(trainer, tokenizer, vae, latents)
        return trainer

    def _build_trainer(self, tokenizer, vae) -> DiffusionTrainer:
        """Fresh (or ``--init-from``) text encoder and UNet in a trainer, at the checkpoint's step on ``--resume``."""
        cfg, arch, log = self.cfg, self.arch, self.log
        te = build_text_encoder(arch["text_encoder"], padded_vocab_size(tokenizer), seed=cfg.seed + 2)
        unet = build_unet(arch["unet"], text_hidden_size=arch["text_encoder"].hidden_size, image_size=cfg.image_size,
                          seed=cfg.seed + 3)
        checkpoint = self.work / "diffusion.pt"
        resuming = cfg.resume and checkpoint.is_file()
        if cfg.init_from is not None and not resuming:
            carried = initialise_from(Path(cfg.init_from), tokenizer, te, unet)
            log(f"diffusion: UNet and text encoder initialised from {cfg.init_from} ({carried['rows_carried']}/"
                f"{carried['rows']} embedding rows carried over by token text"
                + (f"; {carried['blocks_added']} transformer blocks added as identities" if carried["blocks_added"]
                   else "") + ")")
        self.params = {"text_encoder": count_params(te), "unet": count_params(unet), "vae": count_params(vae)}
        log("parameters: " + ", ".join(f"{k} {v / 1e6:.2f} M ({2 * v / 1e6:.1f} MB fp16)"
                                       for k, v in self.params.items()))
        trainer = DiffusionTrainer(
            unet, te, image_size=cfg.image_size, device=self.device, lr=cfg.lr, lr_text_encoder=cfg.lr_text_encoder,
            warmup_steps=cfg.warmup_steps, amp_dtype=self._amp_dtype(), ema_decay=cfg.ema_decay,
            min_snr_gamma=cfg.min_snr_gamma, timestep_shift=cfg.timestep_shift, noise_offset=cfg.noise_offset,
            pyramid_noise=cfg.pyramid_noise, scheduler_config=self.scheduler_config,
            binding_contrast=cfg.binding_contrast, binding_margin=cfg.binding_margin,
            attention_grounding=cfg.attention_grounding, grounding_noise_power=cfg.grounding_noise_power,
        )
        if resuming:
            state = torch.load(checkpoint, map_location=self.device, weights_only=False)
            try:
                trainer.load_state_dict(state["trainer"])
            except RuntimeError as exc:  # missing, unexpected or reshaped tensors
                raise KolorsError(f"{checkpoint} holds another architecture than this command builds: resume with "
                                  "the --architecture and --transformer-layers the run began with") from exc
            self.result.history = state.get("history", [])
            self.elapsed_before = state.get("elapsed", 0.0)
            changed = _changed_options(state.get("options"), self._training_options())
            log(f"diffusion: resumed at step {trainer.step_count}"
                + (f"; changed since its checkpoint: {changed}" if changed else ""))
        return trainer

    def _training_options(self) -> dict:
        return {key: getattr(self.cfg, key) for key in TRAINING_OPTIONS}

    def _train_diffusion(self, trainer: DiffusionTrainer, tokenizer, vae, latents: Latents) -> None:
        """Steps until ``steps_diffusion`` or the time budget; logs, checkpoints and partial exports on the way."""
        cfg, log, device = self.cfg, self.log, self.device
        table = CaptionTokens(tokenizer, latents.tokens, device=device)
        lat_mean, lat_std = latents.means.to(device), latents.stds.to(device)
        sf = latents.scaling_factor
        n_items = lat_mean.shape[0]
        self.pool_size = n_items
        g = torch.Generator(device=device)  # reseeded at every step: see draw()
        # A fixed validation batch: the first items, languages alternating, no dropout.
        k = min(64, n_items)
        val_items = torch.arange(k, device=device)
        val = {"latents": lat_mean[:k].float() * sf,
               **table.lookup(val_items, val_items % len(LANGUAGES), torch.zeros_like(val_items))}
        language_weights = parse_language_weights(cfg.language_weights)
        if cfg.binding_contrast and table.twins is None:
            raise KolorsError(f"--binding-contrast needs the twin captions of the pool, which the pool in "
                              f"{self.work} was made without: give a new --work-dir for a new pool")
        object_masks = None
        if cfg.attention_grounding:
            if table.token_objects is None or latents.object_masks is None:
                raise KolorsError(f"--attention-grounding needs the token objects and object masks of the pool, which "
                                  f"the pool in {self.work} was made without: give a new --work-dir for a new pool")
            object_masks = latents.object_masks.to(device)
        foreground = None
        if cfg.foreground_weight:
            if latents.foreground is None:
                raise KolorsError(f"--foreground-weight needs the shape masks of the pool, which the pool in "
                                  f"{self.work} was made without (before the option): give a new --work-dir for a "
                                  "new pool")
            foreground = latents.foreground.to(device)
            threshold = None
            if cfg.foreground_from != "target":
                sample = slice(0, min(2048, n_items))
                threshold, iou = fit_threshold(lat_mean[sample].float() * sf, foreground[sample])
                log(f"foreground weight {cfg.foreground_weight} on the cells the model's x̂₀ shows a shape"
                    + (" or the target has one" if cfg.foreground_from == "both" else "")
                    + f": cells {threshold:.3f} from the background, IoU {iou:.3f} with the pool's masks")
        steps_total = cfg.steps_diffusion
        deadline = self.start + self.budget - self.reserve if self.budget else None
        t_diff = last_ckpt = last_print = time.monotonic()
        run_loss, run_n = torch.zeros((), device=device), 0
        run_hinge, hinge_n = torch.zeros((), device=device), 0  # --binding-contrast's hinge, steps that had one
        run_grounding, grounding_n = torch.zeros((), device=device), 0  # --attention-grounding's loss, alike
        bar = log.bar(steps_total, "diffusion")
        if bar is not None:
            bar.update(trainer.step_count)
        log(f"diffusion: {steps_total} steps × batch {cfg.batch_size}"
            + (f", stopping by {(deadline - self.start) / 60:.1f} min" if deadline else ""))
        log_every, first_step = 10, trainer.step_count
        warmup_steps, layout_items, warmup_t = self._layout_warmup(trainer, latents)

        def draw(step: int) -> tuple[torch.Tensor, dict, torch.Tensor | None, torch.Tensor | None]:
            """Step ``step``'s batch: latents sampled from the pool's posteriors, captions, the warm-up's
            timesteps (None: the trainer draws them) and the loss weights of the latent cells (None: alike). Every
            draw comes from ``g`` seeded by (seed, step) alone, so a resumed run draws what the uninterrupted one
            would have."""
            g.manual_seed(((cfg.seed + 4) * 1_000_003 + step) % 2**63)
            timesteps = None
            if step < warmup_steps:  # layout scenes only, at the pure-noise end of the schedule
                items = layout_items[torch.randint(0, len(layout_items), (cfg.batch_size,), generator=g,
                                                   device=device)]
                timesteps = torch.randint(warmup_t, trainer.num_train_timesteps, (cfg.batch_size,), generator=g,
                                          device=device)
            else:
                items = torch.randint(0, n_items, (cfg.batch_size,), generator=g, device=device)
            lat = (lat_mean[items].float() + lat_std[items].float() * torch.randn(
                (cfg.batch_size, *lat_mean.shape[1:]), generator=g, device=device)) * sf
            tokens = table.sample(items, dropout=cfg.caption_dropout, generator=g, language_weights=language_weights)
            weight = None if foreground is None else cell_weight(cfg.foreground_weight, cfg.foreground_from,
                                                                 target=foreground[items], threshold=threshold)
            if object_masks is not None:
                tokens["grounding"] = {"token_objects": tokens.pop("token_objects"), "masks": object_masks[items]}
            return lat, tokens, timesteps, weight

        try:
            while trainer.step_count < steps_total:
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    self.status = "stopped by the time budget"
                    break
                progress = trainer.step_count / steps_total
                if self.budget:
                    progress = max(progress, (now - self.start) / (self.budget - self.reserve))
                lat, tokens, timesteps, weight = draw(trainer.step_count)
                trainer.last_contrast = trainer.last_grounding = None
                with deferred():  # a signal lands between steps, never inside one
                    loss, lr = trainer.step(lat, tokens["input_ids"], tokens["attention_mask"], tokens["position_ids"],
                                            progress=progress, timesteps=timesteps, generator=g, weight=weight,
                                            contrast=tokens.get("contrast"), grounding=tokens.get("grounding"))
                run_loss += loss
                run_n += 1
                if trainer.last_contrast is not None:
                    run_hinge += trainer.last_contrast.detach()
                    hinge_n += 1
                if trainer.last_grounding is not None:
                    run_grounding += trainer.last_grounding.detach()
                    grounding_n += 1
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
                        entry = {"step": step, "loss": mean_loss, "fixed_loss": fixed, "lr": lr,
                                 "seconds": now - t_diff}
                        hinge = ""
                        if hinge_n:  # the loss above includes it, weighted
                            entry["binding_hinge"] = float(run_hinge) / hinge_n
                            hinge = f" binding hinge {entry['binding_hinge']:.4f}"
                            run_hinge.zero_()
                            hinge_n = 0
                        if grounding_n:  # alike
                            entry["attention_grounding"] = float(run_grounding) / grounding_n
                            hinge += f" grounding {entry['attention_grounding']:.4f}"
                            run_grounding.zero_()
                            grounding_n = 0
                        self.result.history.append(entry)
                        if bar is not None:
                            bar.set_postfix(loss=f"{mean_loss:.4f}", fixed=f"{fixed:.4f}")
                        else:
                            log(f"diffusion step {step}/{steps_total}: loss {mean_loss:.4f} fixed {fixed:.4f}{hinge} "
                                f"lr {lr:.2e} ({rate:.2f} steps/s)")
                        last_print = now
                    if now - last_ckpt >= cfg.checkpoint_minutes * 60:
                        self._save_checkpoint(trainer, tokenizer, vae, final=False)
                        last_ckpt = time.monotonic()
                        log(f"checkpoint at step {step} → {cfg.out}")
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (under run_command): keep the steps done so far
            self._save_checkpoint(trainer, tokenizer, vae, final=False)
            log(f"diffusion: interrupted at step {trainer.step_count}; checkpoint saved in {self.work} "
                "(continue with --resume)")
            raise
        if bar is not None:
            bar.close()
        seconds = time.monotonic() - t_diff
        fixed = trainer.fixed_loss(val)
        self.result.history.append({"step": trainer.step_count, "loss": float(run_loss) / run_n if run_n else None,
                                    "fixed_loss": fixed, "lr": None, "seconds": seconds})
        log(f"diffusion: {self.status} at step {trainer.step_count} after {seconds:.0f}s "
            f"({(trainer.step_count - first_step) / max(seconds, 1e-6):.2f} steps/s this run), fixed loss {fixed:.4f}")
        self._save_checkpoint(trainer, tokenizer, vae, final=True)

    def _layout_warmup(self, trainer: DiffusionTrainer, latents: Latents) -> tuple[int, torch.Tensor | None, int]:
        """``--layout-warmup``: (its steps, the pool's layout items, the lowest timestep it trains). Its first steps
        learn where a stated position puts the shape from inputs that hold none of the image (docs/evaluation.md)."""
        steps = self.cfg.layout_warmup
        if not steps or trainer.step_count >= steps:
            return 0, None, 0
        if latents.layout is None or not bool(latents.layout.any()):
            raise KolorsError("--layout-warmup needs layout scenes in the pool: add --layout-share (and leave out "
                              "--resume if the pool was rendered without it)")
        items = torch.nonzero(latents.layout.to(self.device)).flatten()
        lowest = trainer.num_train_timesteps * 10 // 11  # the noisiest eleventh: t ≥ 1000 of 1100
        self.log(f"diffusion: layout warm-up, steps {trainer.step_count}–{steps}: {len(items)} layout scenes, "
                 f"t ∈ [{lowest}, {trainer.num_train_timesteps - 1}]")
        return steps, items, lowest

    def _save_checkpoint(self, trainer: DiffusionTrainer, tokenizer, vae, *, final: bool) -> None:
        """The trainer's state for ``--resume``; before the end also a partial model folder to look at. A signal
        during the save waits for its end."""
        with deferred():
            with atomic_file(self.work / "diffusion.pt") as tmp:
                torch.save({"trainer": trainer.state_dict(), "history": self.result.history,
                            "options": self._training_options(),
                            "elapsed": self.elapsed_before + time.monotonic() - self.start}, tmp)
            if not final:
                unet, te = trainer.ema_copies()
                info = self.info(trainer, f"partial (checkpoint at step {trainer.step_count})",
                                 self.preliminary_defaults)
                export_folder(self.cfg.out, tokenizer=tokenizer, vae=vae, text_encoder=te, unet=unet,
                              defaults=self.preliminary_defaults, info=info, vocabulary=self.work / VOCABULARY_FILE,
                              scheduler_config=self.scheduler_config)

    # 5. export, evaluation, README ------------------------------------------------------------------------------
    def finish_stage(self, tokenizer, vae, trainer: DiffusionTrainer) -> RecipeResult:
        cfg, log, result = self.cfg, self.log, self.result
        unet, te = trainer.ema_copies()
        trainer.optimizer = None  # free the optimizer state before evaluating
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        defaults = self.preliminary_defaults
        export_folder(cfg.out, tokenizer=tokenizer, vae=vae, text_encoder=te, unet=unet, defaults=defaults,
                      info=self.info(trainer, self.status, defaults), vocabulary=self.work / VOCABULARY_FILE,
                      scheduler_config=self.scheduler_config)
        ev = None
        if not cfg.skip_eval:
            spec = EvalSpec(pairs=cfg.eval_pairs, seeds=tuple(range(cfg.eval_seeds)), batch_size=cfg.eval_batch)
            best, evals = evaluate_folder(cfg.out, spec, parse_grid(cfg.eval_grid), final_pairs=cfg.eval_final_pairs,
                                          device=self.device, log=log)
            result.eval = [e.as_dict() for e in evals]
            if best is not None:
                defaults = {"width": cfg.image_size, "height": cfg.image_size, "steps": best.steps,
                            "guidance": best.guidance}
                if best.guidance_stop < 1:
                    defaults["guidance_stop"] = best.guidance_stop
                ev = dict(best.as_dict(), seeds=cfg.eval_seeds)
        verify = verify_on_cpu(cfg.out)
        log(f"verified: diffusers KolorsPipeline.from_pretrained(variant='fp16') loads the folder and generates on CPU "
            f"in fp32 ({verify['shape']}, {verify['seconds']:.1f}s)")
        info = self.info(trainer, self.status, defaults, ev)
        # Rewrite only the small files: the weights in the folder are already the final ones.
        (cfg.out / "kolors_defaults.json").write_text(json.dumps(defaults, indent=2) + "\n", encoding="utf-8")
        info["size_mb"] = folder_size(cfg.out) / 1e6
        (cfg.out / "README.md").write_text(render_readme(info), encoding="utf-8")
        info["size_mb"] = folder_size(cfg.out) / 1e6
        (self.work / "result.json").write_text(json.dumps({"info": info, "eval": result.eval,
                                                           "history": result.history}, indent=2, default=str))
        result.defaults, result.info = defaults, info
        log(f"done in {(time.monotonic() - self.start) / 60:.1f} min: {cfg.out} ({info['size_mb']:.1f} MB), "
            f"defaults {defaults}")
        return result

    def info(self, trainer: DiffusionTrainer, status: str, defaults: dict, ev: dict | None = None) -> dict:
        """What the model's README states of this run."""
        cfg = self.cfg
        return {
            "width": cfg.image_size, "height": cfg.image_size, "defaults": defaults, "params": self.params,
            "status": status, "steps_diffusion": trainer.step_count, "batch_size": cfg.batch_size,
            "steps_vae": self.vae_info.get("steps", cfg.steps_vae), "batch_size_vae": cfg.batch_size_vae,
            "minutes": (time.monotonic() - self.start + self.elapsed_before) / 60,
            "hardware": hardware_description(self.device),
            "command": cfg.command or "python -m kolors.recipe --out OUT", "eval": ev,
            "vae": self.vae_info, "pool_size": self.pool_size, "caption_dropout": cfg.caption_dropout,
            "init_from": init_note(cfg.init_from),
        }

    def _amp_dtype(self) -> torch.dtype | None:
        if self.device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def run(config: RecipeConfig) -> RecipeResult:
    """Run every stage of the recipe with ``config``."""
    return RecipeRun(config).run()


def main(argv: list[str] | None = None) -> int:
    try:
        run(config_from_args(argv))
    except KolorsError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0
