"""`kolors train`: fine-tune a Kolors model (full UNet, LoRA, DreamBooth, ControlNet) on captioned images.

Read ``train`` top to bottom. Everything random in a step (the VAE sample, the noise, the timestep, caption
dropout) is drawn from the seed, the micro-step number and the row's place in the global batch, and the batches
come from the same numbers (``dataset.BatchPlan``), so a run resumed from a checkpoint - after a crash, or with
another number of processes sharing the same global batch - computes what the uninterrupted run computes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..adapters.controlnet import controlnet_residuals
from ..errors import KolorsError
from ..files import atomic_file, write_text
from ..devices import move
from ..loading import KolorsComponents, load_components, locate_model
from ..loading.locate import check_model_folder
from ..diffusion.prompt import PromptEmbeddings, encode_tokens, tokenize_prompts
from . import controlnet_model as controlnet_utils
from . import lora_layers as lora_utils
from .checkpoint import checkpoint_step, complete_checkpoints, find_checkpoint, save_checkpoint
from .config import TrainConfig
from .dataset import BatchPlan, ImageDataset, LocalBatches, collate, read_examples
from .loss import diffusion_loss, prediction_target

logger = logging.getLogger("kolors")

UNET_FILE = "diffusion_pytorch_model.safetensors"
LOG_FILE = "train_log.jsonl"
SUMMARY_FILE = "summary.json"
INITIAL_LOSS_FILE = "initial_loss.json"  # kept for runs that resume
CONFIG_FILE = "config.yaml"
# Everything a run writes into its folder: a folder holding anything else is somebody else's.
RUN_FOLDER_NAMES = {CONFIG_FILE, LOG_FILE, SUMMARY_FILE, INITIAL_LOSS_FILE, "logs", "cache", "samples", "checkpoints",
                    "unet", lora_utils.LORA_FILE, controlnet_utils.RESULT_FOLDER}


@dataclass
class TrainResult:
    """What a run produced and how the fixed evaluation loss moved."""

    output: Path
    weights: Path  # the LoRA file, the trained UNet folder, or the ControlNet folder
    steps: int
    initial_loss: float | None
    final_loss: float | None


@dataclass
class Stream:
    """One source of training batches: its dataset, batch order and loader iterator."""

    dataset: ImageDataset
    plan: BatchPlan
    batches: object  # iterator over this process's micro-batches


def train(cfg: TrainConfig) -> TrainResult:
    """Run the training ``cfg`` describes (resuming when ``cfg.resume`` says so) and save the result."""
    cfg, examples = _prepare(cfg)
    output = Path(cfg.output).expanduser()
    tensorboard = cfg.tensorboard and _has_tensorboard()
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, step_scheduler_with_optimizer=False,
                              log_with="tensorboard" if tensorboard else None, project_dir=str(output / "logs"))
    torch.manual_seed(cfg.seed)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        write_text(output / CONFIG_FILE, _as_yaml(cfg))

    # 1. the base model, frozen; then what is trained: the UNet, LoRA layers, or a ControlNet
    model = _load_model(cfg, accelerator)
    unet, text_encoder, vae = model.unet, model.text_encoder, model.vae
    noise_scheduler = DDPMScheduler.from_config(model.scheduler.config)
    class_examples = _class_examples(cfg, model, accelerator) if cfg.mode == "dreambooth" else None
    unet_lora = text_lora = controlnet = None
    if cfg.mode == "full":
        unet.requires_grad_(True)
        groups = [{"params": [p for p in unet.parameters() if p.requires_grad], "lr": cfg.lr}]
    elif cfg.mode == "controlnet":
        controlnet = controlnet_utils.build_controlnet(cfg, unet, _vae_scale(model))
        if cfg.mixed_precision != "no":  # the frozen UNet in the autocast dtype; the ControlNet stays fp32
            unet.to({"fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision])
        groups = [{"params": controlnet_utils.trainable_parameters(controlnet), "lr": cfg.lr}]
    else:
        if cfg.mixed_precision != "no":  # frozen base weights in the autocast dtype; LoRA weights stay fp32
            unet.to({"fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision])
        unet_lora = lora_utils.lora_config(cfg.rank, cfg.lora_alpha, cfg.lora_targets)
        groups = [{"params": lora_utils.add_lora(unet, unet_lora), "lr": cfg.lr}]
        if cfg.train_text_encoder:
            text_lora = lora_utils.lora_config(cfg.rank, cfg.lora_alpha, lora_utils.TEXT_ENCODER_TARGETS)
            groups.append({"params": lora_utils.add_lora(text_encoder, text_lora),
                           "lr": cfg.text_encoder_lr or cfg.lr})
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if controlnet is not None:
            controlnet.enable_gradient_checkpointing()
    unet.train()
    text_encoder.train(cfg.train_text_encoder)
    _check_trainable(cfg, [p for g in groups for p in g["params"]])

    # 2. data: batches addressed by step, latents and prompt embeddings optionally cached to disk
    multiple = _size_multiple(model)
    resolution = cfg.resolution or unet.config.sample_size * _vae_scale(model)
    instance = _dataset(examples, cfg, resolution, multiple, seed=cfg.seed, accelerator=accelerator)
    classes = (_dataset(class_examples, cfg, resolution, multiple, seed=cfg.seed + 1, accelerator=accelerator)
               if class_examples else None)
    caches = _Caches(output / "cache", model, cfg, accelerator)
    caches.prepare([s for s in (instance, classes) if s is not None])
    if cfg.cache_text and not cfg.train_text_encoder:  # every caption is encoded: ChatGLM leaves the device
        move(text_encoder, "cpu")
        if accelerator.device.type == "cuda":
            torch.cuda.empty_cache()

    # 3. optimizer, schedule, EMA, accelerate, resume
    optimizer = _optimizer(cfg, groups)
    from diffusers.optimization import get_scheduler

    lr_scheduler = get_scheduler(cfg.lr_schedule, optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                                 num_training_steps=cfg.steps)
    if controlnet is not None:  # the frozen UNet stays outside accelerate: checkpoints hold the ControlNet only
        controlnet, optimizer, lr_scheduler = accelerator.prepare(controlnet, optimizer, lr_scheduler)
    elif cfg.train_text_encoder:
        unet, text_encoder, optimizer, lr_scheduler = accelerator.prepare(unet, text_encoder, optimizer, lr_scheduler)
    else:
        unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    # the models whose gradients are all-reduced
    synced = [controlnet] if controlnet is not None else [unet, text_encoder] if text_lora else [unet]
    trained = [p for m in synced for p in m.parameters() if p.requires_grad]  # (FSDP replaces parameters)
    if cfg.mode in ("lora", "dreambooth"):
        lora_utils.register_checkpoint_hooks(accelerator, [accelerator.unwrap_model(m) for m in synced])
    ema = None
    if cfg.ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(trained, decay=cfg.ema_decay)
        accelerator.register_for_checkpointing(ema)
    start = 0
    if cfg.resume:
        folder = find_checkpoint(output, cfg.resume)
        accelerator.load_state(str(folder))
        start = checkpoint_step(folder)
        _note(accelerator, cfg, f"resumed from {folder} at step {start}")
    step_models = dict(unet=unet, text_encoder=text_encoder, vae=vae, scheduler=noise_scheduler, caches=caches,
                       controlnet=controlnet)

    for stream in (instance, classes):
        if stream is not None:
            stream.batches = iter(_loader(stream, cfg, accelerator, start))
    initial = _eval_loss(cfg, instance.dataset, **step_models) if start == 0 else _initial_loss(output)
    if accelerator.is_main_process:
        write_text(output / INITIAL_LOSS_FILE, json.dumps({"initial_loss": initial}) + "\n")
        _truncate_log(output / LOG_FILE, start)
    if tensorboard:
        accelerator.init_trackers("kolors-train", config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                                          for k, v in asdict(cfg).items()})

    # 4. the loop: gradient accumulation over micro-steps, one optimizer step per step
    bar = tqdm(total=cfg.steps, initial=start, desc="training", unit="step", dynamic_ncols=True,
               disable=not (cfg.progress and accelerator.is_main_process))
    micro_steps = cfg.gradient_accumulation
    # (stream, loss weight): the images, and for DreamBooth the class images of prior preservation
    parts = [(instance, 1.0)] + ([(classes, cfg.prior_loss_weight)] if classes is not None else [])
    for step in range(start, cfg.steps):
        total = torch.zeros((), device=accelerator.device)
        for micro in range(micro_steps):
            k = step * micro_steps + micro  # the global micro-step: names the batches and the random draws
            for stream_id, (stream, weight) in enumerate(parts):
                last = micro == micro_steps - 1 and stream_id == len(parts) - 1  # gradients all-reduced here
                with _no_sync(accelerator, synced, not last):
                    loss = weight * _loss(cfg, next(stream.batches), k, accelerator, **step_models,
                                          stream_id=stream_id)
                    accelerator.backward(loss / micro_steps)
                total += loss.detach() / micro_steps
        if cfg.max_grad_norm:
            accelerator.clip_grad_norm_(trained, cfg.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(trained)

        done = step + 1
        loss_value = accelerator.reduce(total, reduction="mean").item()
        lr = lr_scheduler.get_last_lr()[0]
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
        if done % cfg.log_every == 0 or done == cfg.steps:
            _log(accelerator, output, {"step": done, "loss": loss_value, "lr": lr})
        if done % cfg.checkpoint_every == 0 and done < cfg.steps:
            save_checkpoint(accelerator, output, done, cfg.keep_checkpoints)
        if cfg.sample_every and cfg.sample_prompts and done % cfg.sample_every == 0:
            _samples(cfg, model, accelerator, output, done)
    bar.close()

    # 5. the result: a last checkpoint, then the EMA weights when kept, saved as a LoRA file, a UNet or ControlNet
    #    folder
    if start < cfg.steps:
        save_checkpoint(accelerator, output, cfg.steps, cfg.keep_checkpoints)
    if ema is not None:
        ema.copy_to(trained)
    final = _eval_loss(cfg, instance.dataset, **step_models)
    weights = _save_result(cfg, accelerator, output, controlnet if controlnet is not None else unet,
                           text_encoder if text_lora else None, unet_lora, text_lora)
    result = TrainResult(output, weights, cfg.steps, initial, final)
    if accelerator.is_main_process:
        summary = {**asdict(result), "output": str(output), "weights": str(weights)}
        write_text(output / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    accelerator.end_training()
    return result


def _prepare(cfg: TrainConfig) -> tuple[TrainConfig, list]:
    """Every check that needs no weights, before anything is created: the run folder, the checkpoint to resume,
    the model folder, the data, the precision the device supports. Returns the settings with ``mixed_precision:
    auto`` resolved, and the training examples."""
    output = Path(cfg.output).expanduser()
    existing = next((p for p in (output, *output.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise KolorsError(f"cannot use {output} as the run folder: {existing} is a file (choose a folder with -o)")
    foreign = sorted(p.name for p in output.iterdir() if p.name not in RUN_FOLDER_NAMES) if output.is_dir() else []
    if foreign:
        raise KolorsError(f"{output} holds {foreign[0]}, which kolors train did not write: choose a new or empty "
                          "folder with -o (a run folder holds only what a run writes)")
    if cfg.resume:
        find_checkpoint(output, cfg.resume)
    elif complete_checkpoints(output):
        raise KolorsError(f"{output} holds checkpoints of an earlier run: continue it with --resume latest, "
                          "or choose a new --output")
    check_model_folder(locate_model(cfg.model))
    device = _device_type()
    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "no" if device != "cuda" else "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    elif precision == "fp16" and device == "cpu":
        raise KolorsError("mixed_precision fp16 needs a GPU and this run trains on the CPU: use --mixed-precision "
                          "no (or auto, or bf16)")
    if cfg.lr_warmup_steps >= cfg.steps and cfg.lr_schedule != "constant":
        logger.warning("lr_warmup_steps (%d) is not below steps (%d): the learning rate never reaches lr",
                       cfg.lr_warmup_steps, cfg.steps)
    examples = read_examples(cfg.data, cfg.instance_prompt if cfg.mode == "dreambooth" else None,
                             conditioning=cfg.mode == "controlnet")
    return replace(cfg, mixed_precision=precision), examples


def _device_type() -> str:
    """The kind of device accelerate will train on."""
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


# --- one training step -----------------------------------------------------------------------------------------
def _loss(cfg: TrainConfig, batch: dict, k: int, accelerator: Accelerator, *, unet, text_encoder, vae, scheduler,
          caches: _Caches, controlnet=None, stream_id: int = 0) -> torch.Tensor:
    """The diffusion loss of this process's share of global micro-batch ``k``."""
    device = accelerator.device
    rows = len(batch["captions"])
    first_row = accelerator.process_index * rows
    shape = caches.latent_shape(batch)
    draws = [_row_draws(cfg, scheduler, shape, k, first_row + i, stream_id) for i in range(rows)]
    latents = caches.latents(batch, [d["latent_noise"] for d in draws], vae).to(device)
    noise = torch.stack([d["noise"] for d in draws]).to(device)
    timesteps = torch.tensor([d["timestep"] for d in draws], device=device)
    captions = ["" if d["drop"] else c for d, c in zip(draws, batch["captions"])]
    with accelerator.autocast():
        text = caches.text(captions, text_encoder, grad=cfg.train_text_encoder)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        added = {"text_embeds": text.pooled, "time_ids": batch["time_ids"].to(device)}
        control = _control(controlnet, batch, noisy, timesteps, text.tokens, added, cfg.controlnet_scale)
        prediction = unet(noisy, timesteps, encoder_hidden_states=text.tokens, added_cond_kwargs=added,
                          **control).sample
    return diffusion_loss(prediction, prediction_target(scheduler, latents, noise, timesteps), timesteps,
                          alphas_cumprod=scheduler.alphas_cumprod, snr_gamma=cfg.snr_gamma,
                          prediction_type=scheduler.config.prediction_type)


def _control(controlnet, batch: dict, noisy: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
             added: dict, scale: float) -> dict:
    """The ControlNet's residuals at conditioning ``scale`` for the UNet (ControlNet training), else nothing."""
    if controlnet is None:
        return {}
    image = batch["control"].to(noisy.device)
    return controlnet_residuals(controlnet, noisy, timesteps, context, added, image, scale=scale)


def _row_draws(cfg: TrainConfig, scheduler: DDPMScheduler, shape: tuple[int, ...], k: int, row: int,
               stream_id: int) -> dict:
    """The random draws of one row of one global micro-batch: a function of (seed, stream, k, row) only."""
    seed = int(np.random.SeedSequence([cfg.seed, stream_id, k, row]).generate_state(1)[0])
    g = torch.Generator().manual_seed(seed)
    return {
        "latent_noise": torch.randn(shape, generator=g),
        "noise": torch.randn(shape, generator=g),
        "timestep": int(torch.randint(0, scheduler.config.num_train_timesteps, (1,), generator=g)),
        "drop": float(torch.rand((), generator=g)) < cfg.caption_dropout,
    }


@torch.no_grad()
def _eval_loss(cfg: TrainConfig, dataset: ImageDataset, *, unet, text_encoder, vae, scheduler, caches: _Caches,
               controlnet=None, count: int = 8) -> float:
    """Unweighted loss on the first ``count`` images with fixed noise and evenly spread timesteps."""
    trained = controlnet if controlnet is not None else unet
    was_training = trained.training
    trained.eval()
    losses = []
    device = next(p for p in unet.parameters()).device
    for i in range(min(count, len(dataset))):
        batch = collate([dataset[i]])
        g = torch.Generator().manual_seed(cfg.seed + i)
        shape = caches.latent_shape(batch)
        latents = caches.latents(batch, [torch.zeros(shape)], vae).to(device)  # the mean: no sampling noise
        noise = torch.randn(shape, generator=g)[None].to(device)
        t = torch.tensor([int((i + 0.5) / count * scheduler.config.num_train_timesteps)], device=device)
        text = caches.text(batch["captions"], text_encoder, grad=False)
        noisy = scheduler.add_noise(latents, noise, t)
        added = {"text_embeds": text.pooled, "time_ids": batch["time_ids"].to(device)}
        with caches.accelerator.autocast() if controlnet is not None else contextlib.nullcontext():
            control = _control(controlnet, batch, noisy, t, text.tokens, added, cfg.controlnet_scale)
            prediction = unet(noisy, t, encoder_hidden_states=text.tokens, added_cond_kwargs=added, **control)
        target = prediction_target(scheduler, latents, noise, t)
        losses.append(F.mse_loss(prediction.sample.float(), target.float()).item())
    trained.train(was_training)
    return float(np.mean(losses))


# --- model, data, optimizer ------------------------------------------------------------------------------------
def _load_model(cfg: TrainConfig, accelerator: Accelerator) -> KolorsComponents:
    """The base model on this process's device, read straight into the dtype each part needs: fp32 for what
    trains (and a VAE that asks for it), the mixed-precision dtype for the frozen rest — a full-size ChatGLM3 is
    never materialised in fp32 (25 GB). ChatGLM's unused language-model head is not loaded."""
    folder = locate_model(cfg.model)
    low = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision)
    model = load_components(folder, device=accelerator.device, dtype=low or torch.float32, text_encoder_head=False,
                            unet_dtype=torch.float32 if cfg.mode == "full" else None)
    if low is not None:
        if cfg.train_text_encoder:
            move(model.text_encoder, dtype=torch.float32)
        if model.vae.config.get("force_upcast", True):
            move(model.vae, dtype=torch.float32)
    return model


def _vae_scale(model: KolorsComponents) -> int:
    return 2 ** (len(model.vae.config.block_out_channels) - 1)


def _size_multiple(model: KolorsComponents) -> int:
    """Image sides must be multiples of this (VAE downsampling × UNet downsampling)."""
    return _vae_scale(model) * 2 ** (len(model.unet.config.block_out_channels) - 1)


def _dataset(examples, cfg: TrainConfig, resolution: int, multiple: int, *, seed: int,
             accelerator: Accelerator) -> Stream:
    dataset = ImageDataset(examples, resolution, multiple, buckets=cfg.buckets)
    plan = BatchPlan(dataset.buckets, cfg.batch_size * accelerator.num_processes, seed)
    return Stream(dataset, plan, None)


def _loader(stream: Stream, cfg: TrainConfig, accelerator: Accelerator, start: int):
    """This process's micro-batches from optimizer step ``start`` to the end of the run."""
    k0, k1 = start * cfg.gradient_accumulation, cfg.steps * cfg.gradient_accumulation
    sampler = LocalBatches(stream.plan, k0, k1, accelerator.process_index, cfg.batch_size)
    return torch.utils.data.DataLoader(stream.dataset, batch_sampler=sampler, collate_fn=collate,
                                       num_workers=cfg.num_workers)


def _optimizer(cfg: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """AdamW, or bitsandbytes' 8-bit AdamW when asked for and importable."""
    kwargs = dict(betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay)
    if cfg.use_8bit_adam:
        try:
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(groups, **kwargs)
        except ImportError:
            logger.warning("use_8bit_adam: bitsandbytes is not installed, using torch AdamW")
    return torch.optim.AdamW(groups, **kwargs)


def _check_trainable(cfg: TrainConfig, trained: list[torch.nn.Parameter]) -> None:
    if not trained:
        raise KolorsError(f"nothing to train: no UNet module matches lora_targets {cfg.lora_targets}")


def _class_examples(cfg: TrainConfig, model: KolorsComponents, accelerator: Accelerator):
    """DreamBooth class images (prior preservation), generating the missing ones with the base model."""
    if not cfg.class_prompt:
        return None
    folder = Path(cfg.class_data).expanduser()
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        have = len([p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")])
        if have < cfg.num_class_images:
            from ..pipelines.legacy import Text2ImagePipeline

            pipe = Text2ImagePipeline(model, device=accelerator.device, dtype=torch.float32,
                                      model_name=str(model.folder))
            _note(accelerator, cfg, f"generating {cfg.num_class_images - have} class images in {folder}")
            for i in range(have, cfg.num_class_images):
                image = pipe(cfg.class_prompt, seed=cfg.seed + i, steps=cfg.sample_steps, progress=False).images[0]
                with atomic_file(folder / f"class-{i:05d}.png") as tmp:
                    image.save(tmp, format="PNG")
    accelerator.wait_for_everyone()
    return read_examples(folder, cfg.class_prompt)[: cfg.num_class_images]


@contextlib.contextmanager
def _no_sync(accelerator: Accelerator, models: list, skip: bool):
    """No gradient all-reduce (for micro-steps before the last of an accumulation)."""
    with contextlib.ExitStack() as stack:
        if skip:
            for m in models:
                stack.enter_context(accelerator.no_sync(m))
        yield


# --- caches ------------------------------------------------------------------------------------------------------
class _Caches:
    """VAE latent distributions and prompt embeddings: computed on the fly, or once and stored on disk."""

    def __init__(self, folder: Path, model: KolorsComponents, cfg: TrainConfig, accelerator: Accelerator):
        self.folder = folder
        self.model = model
        self.cfg = cfg
        self.accelerator = accelerator
        self.vae_scale = _vae_scale(model)
        self.text_memory: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.salt = str(model.folder.resolve())

    def prepare(self, streams: list[Stream]) -> None:
        """Fill the disk caches the config asks for (main process), then switch datasets to cached latents."""
        if self.accelerator.is_main_process:
            for stream in streams:
                if self.cfg.cache_latents:
                    self._fill_latents(stream.dataset)
                if self.cfg.cache_text:
                    for caption in {"", *(e.caption for e in stream.dataset.examples)}:
                        self._text_file(caption)
        self.accelerator.wait_for_everyone()
        if self.cfg.cache_latents:
            for stream in streams:
                stream.dataset.latent_files = [self._latent_path(stream.dataset, i)
                                               for i in range(len(stream.dataset))]

    def latents(self, batch: dict, noise: list[torch.Tensor], vae) -> torch.Tensor:
        """Scaled latents sampled from each row's VAE distribution with that row's ``noise``."""
        if "latent_mean" in batch:
            mean, std = batch["latent_mean"], batch["latent_std"]
        else:
            mean, std = self._encode(batch["pixels"], vae)
        sample = mean + std * torch.stack(noise).to(mean.device)
        shift = self.model.vae.config.get("shift_factor") or 0.0
        return (sample - shift) * self.model.vae.config.scaling_factor

    def latent_shape(self, batch: dict) -> tuple[int, ...]:
        """The shape of one row's latents."""
        if "latent_mean" in batch:
            return tuple(batch["latent_mean"].shape[1:])
        h, w = batch["pixels"].shape[2:]
        return (self.model.vae.config.latent_channels, h // self.vae_scale, w // self.vae_scale)

    def text(self, captions: list[str], text_encoder, *, grad: bool) -> PromptEmbeddings:
        """Prompt embeddings of ``captions`` (differentiable when the text encoder trains; else remembered)."""
        device = self.accelerator.device
        if self.cfg.train_text_encoder:
            inputs = tokenize_prompts(self.model.tokenizer, captions)
            with torch.set_grad_enabled(grad):
                return encode_tokens(text_encoder, **{k: v.to(device) for k, v in inputs.items()})
        parts = [self._text_one(c, text_encoder) for c in captions]
        return PromptEmbeddings(torch.stack([t for t, _ in parts]).to(device),
                                torch.stack([p for _, p in parts]).to(device))

    @torch.no_grad()
    def _encode(self, pixels: torch.Tensor, vae) -> tuple[torch.Tensor, torch.Tensor]:
        dist = vae.encode(pixels.to(self.accelerator.device, vae.dtype)).latent_dist
        return dist.mean.float(), dist.std.float()

    @torch.no_grad()
    def _text_one(self, caption: str, text_encoder) -> tuple[torch.Tensor, torch.Tensor]:
        if caption not in self.text_memory:
            if self.cfg.cache_text:
                tensors = load_file(str(self._text_file(caption)))
                self.text_memory[caption] = (tensors["tokens"], tensors["pooled"])
            else:
                self.text_memory[caption] = self._encode_text(caption, text_encoder)
            if len(self.text_memory) > 4096:
                self.text_memory.pop(next(iter(self.text_memory)))
        return self.text_memory[caption]

    def _encode_text(self, caption: str, text_encoder) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = tokenize_prompts(self.model.tokenizer, [caption])
        with self.accelerator.autocast():
            e = encode_tokens(text_encoder, **{k: v.to(self.accelerator.device) for k, v in inputs.items()})
        return e.tokens[0].float(), e.pooled[0].float()

    def _text_file(self, caption: str) -> Path:
        path = self.folder / "text" / f"{_digest(self.salt, caption)}.safetensors"
        if not path.is_file():
            tokens, pooled = self._encode_text(caption, self.model.text_encoder)
            _atomic_save({"tokens": tokens.cpu().contiguous(), "pooled": pooled.cpu().contiguous()}, path)
        return path

    def _latent_path(self, dataset: ImageDataset, i: int) -> Path:
        path = dataset.examples[i].path
        stat = path.stat()
        return self.folder / "latents" / (_digest(self.salt, str(path.resolve()), stat.st_mtime_ns, stat.st_size,
                                                  dataset.buckets[i]) + ".safetensors")

    def _fill_latents(self, dataset: ImageDataset) -> None:
        missing = [i for i in range(len(dataset)) if not self._latent_path(dataset, i).is_file()]
        for i in tqdm(missing, desc="caching latents", disable=not self.cfg.progress or not missing):
            mean, std = self._encode(dataset[i]["pixels"][None], self.model.vae)
            _atomic_save({"mean": mean[0].cpu().contiguous(), "std": std[0].cpu().contiguous()},
                         self._latent_path(dataset, i))


def _digest(*parts) -> str:
    return hashlib.sha1("\0".join(map(str, parts)).encode()).hexdigest()


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp))


# --- results, logs, samples ------------------------------------------------------------------------------------
def _save_result(cfg: TrainConfig, accelerator: Accelerator, output: Path, unet, text_encoder, unet_lora,
                 text_lora) -> Path:
    """The LoRA file (lora, dreambooth), the trained UNet as a diffusers folder (full), or the ControlNet folder
    (controlnet: ``unet`` is the ControlNet)."""
    whole = cfg.mode in ("full", "controlnet")
    state = accelerator.get_state_dict(unet) if whole else None  # gathers FSDP shards (collective)
    if not accelerator.is_main_process:
        return output
    if cfg.mode == "controlnet":
        return controlnet_utils.save_controlnet(accelerator.unwrap_model(unet), output / controlnet_utils.RESULT_FOLDER,
                                                state)
    if cfg.mode == "full":
        folder = output / "unet"
        folder.mkdir(parents=True, exist_ok=True)
        accelerator.unwrap_model(unet).save_config(folder)
        _atomic_save({k: v.detach().float().cpu().contiguous() for k, v in state.items()}, folder / UNET_FILE)
        return folder
    te = accelerator.unwrap_model(text_encoder) if text_encoder is not None else None
    return lora_utils.save_lora_file(output, accelerator.unwrap_model(unet), unet_lora, te, text_lora)


def _samples(cfg: TrainConfig, model: KolorsComponents, accelerator: Accelerator, output: Path, step: int) -> None:
    """Images of ``cfg.sample_prompts`` with the weights of this step (main process; not under FSDP, not for
    ControlNets: they need control images)."""
    if accelerator.distributed_type.name == "FSDP" or cfg.mode == "controlnet":
        return
    if accelerator.is_main_process:
        from ..pipelines.legacy import Text2ImagePipeline

        pipe = Text2ImagePipeline(model, device=accelerator.device, dtype=torch.float32, model_name=str(model.folder))
        folder = output / "samples"
        folder.mkdir(exist_ok=True)
        model.unet.eval()
        parked = next(model.text_encoder.parameters()).device != accelerator.device  # moved off after caching
        if parked:
            move(model.text_encoder, accelerator.device)
        try:
            for i, prompt in enumerate(cfg.sample_prompts):
                image = pipe(prompt, seed=cfg.seed, steps=cfg.sample_steps, progress=False).images[0]
                with atomic_file(folder / f"step-{step:06d}-{i}.png") as tmp:
                    image.save(tmp, format="PNG")
        finally:
            if parked:
                move(model.text_encoder, "cpu")
        model.unet.train()
    accelerator.wait_for_everyone()


def _log(accelerator: Accelerator, output: Path, record: dict) -> None:
    """One line of OUTPUT/train_log.jsonl, and TensorBoard scalars when it is on."""
    if accelerator.trackers:
        accelerator.log({"train/loss": record["loss"], "train/lr": record["lr"]}, step=record["step"])
    if accelerator.is_main_process:
        with (output / LOG_FILE).open("a") as f:
            f.write(json.dumps(record) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines after ``step`` (written by a killed run after its last checkpoint)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        write_text(path, "".join(line + "\n" for line in lines))


def _initial_loss(output: Path) -> float | None:
    """The evaluation loss before training, as the run that started from step 0 recorded it."""
    path = output / INITIAL_LOSS_FILE
    return json.loads(path.read_text()).get("initial_loss") if path.is_file() else None


def _note(accelerator: Accelerator, cfg: TrainConfig, message: str) -> None:
    """A progress note on stderr (main process; not with progress off)."""
    if accelerator.is_main_process and cfg.progress:
        print(f"kolors: {message}", file=sys.stderr, flush=True)


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def _as_yaml(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(asdict(cfg), sort_keys=False, allow_unicode=True)


