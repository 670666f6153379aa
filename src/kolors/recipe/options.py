"""The recipe's options: every option of ``python -m kolors.recipe``, with defaults by device."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ..arguments import (
    Parser,
    non_negative_int,
    non_negative_number,
    positive_int,
    positive_number,
    share,
)
from ..data.shapes import (
    BACKGROUNDS,
    COUNT_WEIGHTS,
    KIND_WEIGHTS,
    KINDS,
    PAIR_SHAPES,
    SPLITS,
    SceneMix,
)
from ..devices import DEVICES, is_device_name
from . import PROG
from .architecture import ARCHITECTURES, size_multiple
from .pool import LANGUAGES, TWIN_KINDS

__all__ = ["DEVICE_DEFAULTS", "RecipeConfig", "parse_language_weights", "parse_scene_mix", "parse_count_mix",
           "parse_pair_mix", "scene_mix", "parse_grid", "build_parser", "config_from_args"]

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
        "eval_pairs": 12,
        "eval_final_pairs": 54,
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
        "eval_pairs": 6,
        "eval_final_pairs": 54,
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
    transformer_layers: int | None = None
    seed: int = 0
    image_size: int = 128
    workers: int | None = None
    pool_size: int | None = None
    captions_per_language: int = 2
    stated_position: float = 0.0
    layout_share: float = 0.0
    layout_background: tuple[str, ...] = ("white",)
    layout_warmup: int = 0
    scene_mix: str | None = None
    count_mix: str | None = None
    pair_mix: str | None = None
    tokenizer_scenes: int = 20000
    vocab_size: int | None = None
    merge_han_characters: bool = False
    steps_vae: int | None = None
    batch_size_vae: int | None = None
    lr_vae: float | None = None
    kl_weight: float = 1e-5
    vae_foreground_weight: float = 4.0
    vae_finetune_steps: int = 0
    vae_anchor: float = 1.0
    vae_finetune_part: str = "all"
    vae_crop: int | None = None
    steps_diffusion: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    lr_text_encoder: float | None = None
    language_weights: str | None = None
    foreground_weight: float = 0.0
    foreground_from: str = "target"
    binding_contrast: float = 0.0
    binding_margin: float = 0.2
    binding_twin: tuple[str, ...] = ("exchange",)
    attention_grounding: float = 0.0
    grounding_noise_power: float = 0.0
    warmup_steps: int = 200
    ema_decay: float | None = None
    caption_dropout: float = 0.1
    min_snr_gamma: float | None = 5.0
    timestep_shift: float = 1.0
    noise_offset: float = 0.0
    pyramid_noise: float = 0.0
    prediction_type: str = "epsilon"
    zero_terminal_snr: bool = False
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


def _parse_weights(text: str, names: tuple[str, ...], flag: str, example: str) -> dict[str, float]:
    given = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if name.strip() in given:
            raise ValueError(f"{flag} names {name.strip()} twice, got {text!r}")
        if name.strip() not in names or weight is None or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"{flag}: expected e.g. {example} (non-negative weights of {', '.join(names)}), "
                             f"got {text!r}")
        given[name.strip()] = weight
    if sum(given.values()) <= 0:
        raise ValueError(f"{flag} needs a positive weight somewhere, got {text!r}")
    return given


def parse_language_weights(text: str | None) -> tuple[float, ...] | None:
    """``"en=1,zh=3"`` → weights in ``LANGUAGES`` order (missing languages 0); None → None (uniform)."""
    if not text:
        return None
    given = _parse_weights(text, LANGUAGES, "--language-weights", "en=1,zh=3")
    return tuple(given.get(lang, 0.0) for lang in LANGUAGES)


def parse_scene_mix(text: str | None) -> dict[str, float] | None:
    """``"single=0.3,count=0.3,pair=0.4"`` → kind weights in ``KINDS`` order (missing kinds 0); None → None (the
    dataset's own mix)."""
    if not text:
        return None
    given = _parse_weights(text, KINDS, "--scene-mix", "single=0.3,count=0.3,pair=0.4")
    return {kind: given.get(kind, 0.0) for kind in KINDS}


def parse_count_mix(text: str | None) -> dict[int, float] | None:
    """``"1=0.1,2=0.3,3=0.6"`` → weights of one, two and three shapes in a count scene (missing numbers 0); None →
    None (the dataset's own)."""
    if not text:
        return None
    given = _parse_weights(text, tuple(str(n) for n in COUNT_WEIGHTS), "--count-mix", "1=0.1,2=0.3,3=0.6")
    return {n: given.get(str(n), 0.0) for n in COUNT_WEIGHTS}


def parse_pair_mix(text: str | None) -> dict[str, float] | None:
    """``"same=0.1,different=0.9"`` → how often a pair scene's two objects share their shape (missing 0); None →
    None (the dataset's own: shapes drawn independently)."""
    if not text:
        return None
    given = _parse_weights(text, PAIR_SHAPES, "--pair-mix", "same=0.1,different=0.9")
    return {key: given.get(key, 0.0) for key in PAIR_SHAPES}


def architecture(cfg: RecipeConfig) -> dict:
    """The component specs of ``--architecture``, the UNet's depth changed by ``--transformer-layers``."""
    arch = ARCHITECTURES[cfg.architecture]
    if cfg.transformer_layers is None:
        return arch
    unet = arch["unet"]
    depth = (cfg.transformer_layers,) * len(unet.transformer_layers_per_block)
    return dict(arch, unet=replace(unet, transformer_layers_per_block=depth))


def scene_mix(cfg: RecipeConfig) -> SceneMix:
    """The pool's scene mix that ``--scene-mix``, ``--count-mix`` and ``--pair-mix`` ask for."""
    return SceneMix(kinds=parse_scene_mix(cfg.scene_mix), counts=parse_count_mix(cfg.count_mix),
                    pairs=parse_pair_mix(cfg.pair_mix))


def parse_grid(text: str) -> list[tuple[int, float, float]]:
    """``"20x5,25x3x0.3"`` → [(20, 5.0, 1.0), (25, 3.0, 0.3)]: (steps, guidance, guidance stop) points; a point
    without a stop guides every step. A malformed grid is a ValueError naming the point."""
    grid = []
    for item in text.split(","):
        parts = item.strip().split("x")
        try:
            steps, guidance, stop = int(parts[0]), float(parts[1]), float(parts[2]) if len(parts) == 3 else 1.0
        except (ValueError, IndexError):
            steps = None
        if steps is None or len(parts) > 3 or steps < 1 or not (math.isfinite(guidance) and guidance >= 0) \
                or not 0 <= stop <= 1:
            raise ValueError(f"--eval-grid: {item.strip()!r} is not STEPSxGUIDANCE or STEPSxGUIDANCExSTOP (e.g. "
                             "30x5 or 25x3x0.3: steps ≥ 1, guidance ≥ 0, the guided share of the steps 0–1)")
        grid.append((steps, guidance, stop))
    return grid


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Train the built-in Kolors-shapes model (all stages) and save it in the diffusers Kolors layout.",
    )
    p.add_argument("--out", required=True, type=Path, help="output model folder")
    p.add_argument("--work-dir", type=Path, help="checkpoints and caches (default: OUT.work)")
    p.add_argument("--device", default="auto", help=f"{', '.join(DEVICES)} (cuda:N for one GPU of several)")
    p.add_argument("--architecture", default="full", choices=sorted(ARCHITECTURES))
    p.add_argument("--transformer-layers", type=positive_int, metavar="N",
                   help="transformer blocks in each of the UNet's attention blocks (default: the architecture's, 1); "
                        "with --init-from a shallower model, the added blocks start as identities, so the run "
                        "begins from that model's exact outputs")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--image-size", type=positive_int, default=128)
    p.add_argument("--workers", type=positive_int, help="processes rendering the pool (default: all cores)")
    p.add_argument("--pool-size", type=positive_int, help="scenes rendered once and reused")
    p.add_argument("--captions-per-language", type=positive_int, default=2, help="wordings kept per scene and language")
    p.add_argument("--stated-position", type=share, default=0.0, metavar="P",
                   help="share of single-shape and two-object captions that say where the objects are "
                        "(0: the templates' natural mix, about half)")
    p.add_argument("--layout-share", type=share, default=0.0, metavar="P",
                   help="share of the pool that is one shape on one background (--layout-background), captioned "
                        "with where it is: a position signal that does not cancel across colours (0: none)")
    p.add_argument("--layout-background", choices=BACKGROUNDS, nargs="+", default=["white"], metavar="COLOUR",
                   help="the background of the layout scenes, or several (each scene one of them, evenly; repeat one to "
                        f"weigh it more): {', '.join(BACKGROUNDS)} (default: white)")
    p.add_argument("--layout-warmup", type=non_negative_int, default=0, metavar="STEPS",
                   help="first diffusion steps on layout scenes only, at the pure-noise end of the schedule, where "
                        "only the words say where the shape goes (needs --layout-share and --zero-terminal-snr)")
    p.add_argument("--scene-mix", metavar="KIND=W,...",
                   help="how often the pool's other scenes are each kind: one shape, several identical shapes, two "
                        "objects with a relation (default: "
                        + ",".join(f"{kind}={weight:g}" for kind, weight in KIND_WEIGHTS.items()) + ")")
    p.add_argument("--count-mix", metavar="N=W,...",
                   help="how often a scene of several identical shapes has one, two or three of them (default: "
                        + ",".join(f"{n}={weight:g}" for n, weight in COUNT_WEIGHTS.items()) + ")")
    p.add_argument("--pair-mix", metavar="same=W,different=W",
                   help="how often the two objects of a two-object scene share their shape (a red and a blue circle) "
                        "or not (default: shapes drawn independently, about 30%% the same)")
    p.add_argument("--tokenizer-scenes", type=positive_int, default=20000,
                   help="scenes captioned to train the tokenizer")
    p.add_argument("--vocab-size", type=positive_int)
    p.add_argument("--merge-han-characters", action="store_true",
                   help="let BPE merge Han characters into multi-character pieces (the recipe before 2026-11-24)")
    p.add_argument("--steps-vae", type=positive_int)
    p.add_argument("--batch-size-vae", type=positive_int)
    p.add_argument("--lr-vae", type=positive_number)
    p.add_argument("--kl-weight", type=non_negative_number, default=1e-5)
    p.add_argument("--vae-foreground-weight", type=non_negative_number, default=4.0,
                   help="extra weight of shape pixels in the VAE reconstruction loss")
    p.add_argument("--vae-finetune-steps", type=non_negative_int, default=0,
                   help="with --init-from: steps continuing the kept VAE on this run's scenes (e.g. new colours), "
                        "its latents held near the old ones (--vae-anchor)")
    p.add_argument("--vae-anchor", type=non_negative_number, default=1.0,
                   help="weight holding a continued VAE's (scaled) latents near its starting point's")
    p.add_argument("--vae-finetune-part", choices=("all", "decoder"), default="all",
                   help="what --vae-finetune-steps trains: all of the VAE (latents held by --vae-anchor), or only "
                        "its decoder (the encoder frozen: the latents a diffusion model learned stay exactly as they "
                        "are, so a kept UNet needs no retraining)")
    p.add_argument("--vae-crop", type=positive_int, metavar="PX",
                   help="train the VAE on random PX×PX crops (cheaper; the VAE is convolutional)")
    p.add_argument("--steps-diffusion", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_number)
    p.add_argument("--lr-text-encoder", type=positive_number,
                   help="peak learning rate of the text encoder (default: --lr)")
    p.add_argument("--language-weights", metavar="en=W,zh=W",
                   help="how often each caption language is drawn (default: equally)")
    p.add_argument("--foreground-weight", type=non_negative_number, default=0.0, metavar="W",
                   help="weigh the diffusion loss 1 + W on the latent cells that hold a shape (0: every cell alike); "
                        "shapes cover a tenth of an image, so their colours are a small share of a plain loss")
    p.add_argument("--foreground-from", choices=("target", "prediction", "both"), default="target",
                   help="which cells --foreground-weight weighs: the training image's shapes (target; an added "
                        "shape then costs less than a missing one), those the model's own estimate of the image "
                        "shows (prediction; no such bias), or both")
    p.add_argument("--binding-contrast", type=non_negative_number, default=0.0, metavar="W",
                   help="on two-object scenes, add W × a hinge that asks the denoising loss under the caption with "
                        "the two colours exchanged to exceed the true caption's by --binding-margin (0: off; the "
                        "pool then also holds those captions)")
    p.add_argument("--binding-margin", type=positive_number, default=0.2, metavar="M",
                   help="the relative loss gap --binding-contrast asks for (0.2: the exchanged caption's loss 20%% "
                        "above the true one's)")
    p.add_argument("--binding-twin", choices=TWIN_KINDS, nargs="+", default=["exchange"], metavar="KIND",
                   help="the wrong captions --binding-contrast contrasts, used in turn over each scene's captions: "
                        "exchange (the two colours on the other objects), one-shape (both objects named by one of "
                        "their shapes); a kind given twice comes twice as often (default: exchange)")
    p.add_argument("--attention-grounding", type=non_negative_number, default=0.0, metavar="W",
                   help="add W × the share of cross-attention that the words naming an object put outside it, so "
                        "that a colour or shape word is read where its object is (0: off; the pool then also holds "
                        "which token names which object, and each object's cells)")
    p.add_argument("--grounding-noise-power", type=non_negative_number, default=0.0, metavar="P",
                   help="weigh each row of --attention-grounding by (t / T)^P within its batch, moving the term "
                        "toward the noisy timesteps where the layout and the kinds of shape are decided (0: all "
                        "timesteps alike)")
    p.add_argument("--warmup-steps", type=non_negative_int, default=200)
    p.add_argument("--ema-decay", type=share, help="0 disables EMA")
    p.add_argument("--caption-dropout", type=share, default=0.1)
    p.add_argument("--min-snr-gamma", type=non_negative_number,
                   help="Min-SNR-γ loss weighting, 0 disables (default: 5 for epsilon, off for v-prediction, whose "
                        "Min-SNR weight vanishes at the pure-noise timestep)")
    p.add_argument("--timestep-shift", type=positive_number, default=1.0,
                   help="draw training timesteps shifted towards high noise (1: uniform; 3: three quarters in the noisier half)")
    p.add_argument("--noise-offset", type=non_negative_number, default=0.0,
                   help="offset noise: a per-channel constant of this std added to the training noise (0: off)")
    p.add_argument("--pyramid-noise", type=non_negative_number, default=0.0, metavar="DISCOUNT",
                   help="multi-resolution training noise, level i weighted DISCOUNT**i (0: off)")
    p.add_argument("--prediction-type", default="epsilon", choices=("epsilon", "v_prediction"),
                   help="what the UNet predicts (written to the exported scheduler config)")
    p.add_argument("--zero-terminal-snr", action="store_true",
                   help="rescale the noise schedule so its last timestep is pure noise, sampled with trailing "
                        "spacing (needs --prediction-type v_prediction)")
    p.add_argument("--time-budget-minutes", type=positive_number, help="wall-clock limit of the whole run")
    p.add_argument("--checkpoint-minutes", type=non_negative_number, help="how often to save (0: every step)")
    p.add_argument("--log-seconds", type=non_negative_number, help="how often to log (0: every step)")
    p.add_argument("--eval-pairs", type=positive_int,
                   help="composition prompt pairs (en + zh) per category and grid point")
    p.add_argument("--eval-final-pairs", type=positive_int, help="pairs of the final evaluation at the chosen settings")
    p.add_argument("--eval-seeds", type=positive_int, default=2)
    p.add_argument("--eval-grid", help='STEPSxGUIDANCE[xSTOP] list, e.g. "20x5,30x7.5,25x3x0.3" (STOP: the share of '
                                       'the steps guided, written to kolors_defaults.json as guidance_stop)')
    p.add_argument("--eval-batch", type=positive_int)
    p.add_argument("--eval-split", default="heldout", choices=SPLITS)
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--resume", action="store_true", help="reuse finished stages and the diffusion checkpoint")
    p.add_argument("--init-from", type=Path, metavar="FOLDER",
                   help="start from a model this recipe exported: its VAE is kept (no VAE stage), its UNet and "
                        "text encoder are trained on (embedding rows carried over by token text)")
    return p


def config_from_args(argv: list[str] | None = None) -> RecipeConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not is_device_name(args.device):
        parser.error(f"argument --device: one of {', '.join(DEVICES)} (cuda:N for one GPU of several), "
                     f"got {args.device!r}")
    multiple = size_multiple(ARCHITECTURES[args.architecture])
    if args.image_size % multiple:
        parser.error(f"argument --image-size: the {args.architecture} architecture needs a multiple of {multiple} "
                     f"(e.g. {max(multiple, args.image_size // multiple * multiple)}), got {args.image_size}")
    if args.vae_crop is not None and (args.vae_crop % 8 or args.vae_crop > args.image_size):
        parser.error(f"argument --vae-crop: a multiple of 8 up to --image-size {args.image_size}, got {args.vae_crop}")
    for flag in ("ema_decay", "caption_dropout"):
        if (getattr(args, flag) or 0) >= 1:
            parser.error(f"argument --{flag.replace('_', '-')}: must be below 1, got {getattr(args, flag)}")
    if args.zero_terminal_snr and args.prediction_type != "v_prediction":
        parser.error("--zero-terminal-snr needs --prediction-type v_prediction (an epsilon model cannot predict "
                     "from pure noise)")
    if args.layout_warmup and not (args.layout_share > 0 and args.zero_terminal_snr):
        parser.error("--layout-warmup needs --layout-share P > 0 (its scenes) and --zero-terminal-snr (a schedule "
                     "whose last steps hold none of the image)")
    if args.vae_finetune_part != "all" and not (args.vae_finetune_steps and args.init_from):
        parser.error(f"--vae-finetune-part {args.vae_finetune_part} chooses what --vae-finetune-steps N trains on "
                     "the VAE of --init-from FOLDER: give both")
    if args.foreground_from != "target" and not args.foreground_weight:
        parser.error(f"--foreground-from {args.foreground_from} chooses the cells --foreground-weight W weighs: "
                     "give that too")
    if args.binding_twin != ["exchange"] and not args.binding_contrast:
        parser.error(f"--binding-twin {' '.join(args.binding_twin)} chooses the captions --binding-contrast W "
                     "contrasts: give that too")
    if args.grounding_noise_power and not args.attention_grounding:
        parser.error(f"--grounding-noise-power {args.grounding_noise_power:g} weighs the term --attention-grounding W "
                     "adds: give that too")
    for flag, parse, text in (("--scene-mix", parse_scene_mix, args.scene_mix),
                              ("--count-mix", parse_count_mix, args.count_mix),
                              ("--pair-mix", parse_pair_mix, args.pair_mix),
                              ("--language-weights", parse_language_weights, args.language_weights),
                              ("--eval-grid", parse_grid, args.eval_grid)):
        if text is not None and not text.strip():  # e.g. an unset shell variable: not the default by accident
            parser.error(f"{flag} is empty: give its value or leave the option out")
        try:  # checked now, long before they are used
            if text:
                parse(text)
        except ValueError as e:
            parser.error(str(e))
    values = vars(args)
    values["layout_background"] = tuple(args.layout_background)
    values["binding_twin"] = tuple(args.binding_twin)
    if values.get("ema_decay") == 0:
        values["ema_decay"] = 0.0
    gamma = values["min_snr_gamma"]
    if gamma is None:
        gamma = 5.0 if args.prediction_type == "epsilon" else 0
    values["min_snr_gamma"] = gamma or None
    argv_used = sys.argv[1:] if argv is None else argv
    values["command"] = "python -m kolors.recipe " + " ".join(argv_used)
    return RecipeConfig(**values)
