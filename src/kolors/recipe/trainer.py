"""Stage "diffusion": a ChatGLM-style text encoder trained jointly with an SDXL-style UNet, Kolors conditioning.

Everything the denoiser sees is produced exactly as ``KolorsPipeline`` produces it at inference:

* prompts tokenized with ``padding="max_length", max_length=256, truncation=True`` (left padding, [gMASK] sop);
* ``text_encoder(input_ids, attention_mask, position_ids, output_hidden_states=True)``; token embeddings are
  ``hidden_states[-2]`` made batch-first, the pooled embedding is ``hidden_states[-1][-1]``;
* SDXL micro-conditioning ``time_ids = original_size + (0, 0) + target_size`` at the native resolution;
* the noise schedule of the Kolors scheduler config (1100 steps, scaled-linear betas 0.00085…0.014, epsilon), or
  the same with v-prediction and zero terminal SNR (``architecture.scheduler_config``);
* caption dropout to the empty prompt "" (inference encodes the empty negative prompt, it does not zero it).

The loss is `kolors train`'s (``kolors.training.loss``): MSE to the schedule's prediction target with Min-SNR-γ
weighting. ``binding_contrast`` adds a hinge on two-object scenes: the same noisy latents denoised under the caption
whose two colours are exchanged (its "twin", ``kolors.recipe.pool``) must miss the target by at least
``binding_margin`` (relative) more than under the true caption. It trains exactly what ``word_probe``'s binding row
measures: that the prediction depends on which colour goes with which shape, not only on which colours are named.
``attention_grounding`` adds the share of cross-attention that the words naming an object put outside it
(``kolors.recipe.grounding``): it trains where each word is read, which ``word_probe``'s attention table measures.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel

from ..models.chatglm import ChatGLMModel, ChatGLMTokenizer
from ..diffusion.prompt import encode_tokens, tokenize_prompts
from ..training.loss import diffusion_loss, predicted_sample, prediction_target
from .architecture import KOLORS_SCHEDULER_CONFIG, MAX_TOKENS
from .grounding import CrossAttentionMaps, grounding_loss, noise_weights

__all__ = [
    "tokenize",
    "encode_text",
    "time_ids",
    "sample_timesteps",
    "training_noise",
    "noise_scheduler",
    "EMA",
    "DiffusionTrainer",
]


def tokenize(tokenizer: ChatGLMTokenizer, prompts: list[str]) -> dict[str, torch.Tensor]:
    """Token ids, attention mask and position ids exactly as KolorsPipeline.encode_prompt makes them."""
    return tokenize_prompts(tokenizer, prompts, max_tokens=MAX_TOKENS)


def encode_text(
    text_encoder: ChatGLMModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(token embeddings B×256×H from hidden_states[-2], pooled B×H from the last token of hidden_states[-1])."""
    embeddings = encode_tokens(text_encoder, input_ids, attention_mask, position_ids)
    return embeddings.tokens, embeddings.pooled


def time_ids(batch: int, image_size: int, *, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """original_size + crops_coords_top_left (0, 0) + target_size, as the pipeline passes them."""
    row = torch.tensor([image_size, image_size, 0, 0, image_size, image_size], dtype=dtype, device=device)
    return row.expand(batch, 6)


def sample_timesteps(n: int, num_train_timesteps: int, *, shift: float = 1.0, device: torch.device | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` training timesteps: uniform for ``shift`` 1; ``shift`` > 1 draws the noisier half more often.

    u ~ U(0, 1) is mapped to shift·u / (1 + (shift − 1)·u), the time shift of SD3-style trainers; the layout of an
    image (which shape, where) is decided at high noise, where an epsilon-prediction loss is small.
    """
    u = torch.rand(n, device=device, generator=generator)
    if shift != 1.0:
        u = shift * u / (1 + (shift - 1) * u)
    return (u * num_train_timesteps).long().clamp_(max=num_train_timesteps - 1)


def training_noise(latents: torch.Tensor, *, offset: float = 0.0, pyramid: float = 0.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise for ``latents``, with extra low-frequency components when asked.

    ``offset``: plus ``offset`` × one normal draw per sample and channel (offset noise, diffusers' ``noise_offset``).
    ``pyramid``: plus normal draws at half, quarter, … of the latent's side down to 1×1, upsampled, level i weighted
    ``pyramid``**i, the sum rescaled to unit variance (multi-resolution noise). A small latent's lowest frequencies
    (its mean colour, where its shapes sit) carry only a sliver of white noise's energy, so at the first sampling
    step the seed's own low frequencies decide the background and the layout; with these components in training,
    the model has to predict them, and learns to set them from the prompt.
    """
    b, c, h, w = latents.shape
    noise = torch.randn(latents.shape, generator=generator, device=latents.device)
    if pyramid:
        total, level, size = noise, 1, min(h, w) // 2
        while size >= 1:
            weight = pyramid**level
            low = torch.randn((b, c, size, size), generator=generator, device=latents.device)
            total = total + weight * F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
            level, size = level + 1, size // 2
        noise = total / total.std(dim=(1, 2, 3), keepdim=True)
    if offset:
        noise = noise + offset * torch.randn((b, c, 1, 1), generator=generator, device=latents.device)
    return noise.to(latents.dtype)


def noise_scheduler(config: dict | None = None) -> DDPMScheduler:
    """Forward-process noise of ``config`` (default: the Kolors Euler config) as a DDPMScheduler."""
    config = {k: v for k, v in (config or KOLORS_SCHEDULER_CONFIG).items() if not k.startswith("_")}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DDPMScheduler.from_config(config)


class EMA:
    """Exponential moving average of a list of parameters (fp32 shadows), with the usual warm-up of the decay."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params = list(params)
        self.shadow = [p.detach().float().clone() for p in self.params]
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1.0 - d)

    @torch.no_grad()
    def copy_to(self, params: list[torch.nn.Parameter]) -> None:
        for s, p in zip(self.shadow, params):
            p.copy_(s.to(p.dtype))

    def state_dict(self) -> dict:
        return {"shadow": [s.cpu() for s in self.shadow], "decay": self.decay, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.shadow = [s.to(p.device) for s, p in zip(state["shadow"], self.params)]
        self.decay = state["decay"]
        self.updates = state["updates"]


class DiffusionTrainer:
    """One optimisation step of text encoder + UNet on a batch of (unscaled-then-scaled) latents and tokens."""

    def __init__(
        self,
        unet: UNet2DConditionModel,
        text_encoder: ChatGLMModel,
        *,
        image_size: int,
        device: torch.device,
        lr: float = 3e-4,
        lr_text_encoder: float | None = None,
        weight_decay: float = 0.01,
        warmup_steps: int = 200,
        min_lr_ratio: float = 0.1,
        amp_dtype: torch.dtype | None = None,
        ema_decay: float | None = 0.999,
        min_snr_gamma: float | None = 5.0,
        timestep_shift: float = 1.0,
        noise_offset: float = 0.0,
        pyramid_noise: float = 0.0,
        grad_clip: float = 1.0,
        scheduler_config: dict | None = None,
        binding_contrast: float = 0.0,
        binding_margin: float = 0.2,
        attention_grounding: float = 0.0,
        grounding_noise_power: float = 0.0,
    ):
        self.unet = unet.to(device).train()
        self.text_encoder = text_encoder.to(device).train()
        self.device = device
        self.image_size = image_size
        self.amp_dtype = amp_dtype
        self.scheduler = noise_scheduler(scheduler_config)
        self.alphas_cumprod = self.scheduler.alphas_cumprod.to(device)
        self.num_train_timesteps = self.scheduler.config.num_train_timesteps
        self.params = [p for p in list(unet.parameters()) + list(text_encoder.parameters()) if p.requires_grad]
        # The ChatGLM output layer (LM head) is part of the architecture but unused by Kolors: no gradient.
        self.trained = [p for p in self.params if p is not text_encoder.output_layer.weight]
        # Per group a multiple of the scheduled lr: 1 for the UNet, lr_text_encoder / lr for the text encoder.
        te_scale = 1.0 if lr_text_encoder is None else lr_text_encoder / lr
        te_params = {id(p) for p in text_encoder.parameters()}
        groups = []
        for scale, members in ((1.0, [p for p in self.trained if id(p) not in te_params]),
                               (te_scale, [p for p in self.trained if id(p) in te_params])):
            groups.append({"params": [p for p in members if p.ndim >= 2], "weight_decay": weight_decay,
                           "lr_scale": scale})
            groups.append({"params": [p for p in members if p.ndim < 2], "weight_decay": 0.0, "lr_scale": scale})
        self.optimizer = torch.optim.AdamW(
            [g for g in groups if g["params"]],
            lr=lr,
            betas=(0.9, 0.99),
            eps=1e-8,
            fused=device.type == "cuda",
        )
        self.base_lr = lr
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.min_snr_gamma = min_snr_gamma
        self.timestep_shift = timestep_shift
        self.noise_offset = noise_offset
        self.pyramid_noise = pyramid_noise
        self.grad_clip = grad_clip
        self.binding_contrast = binding_contrast
        self.binding_margin = binding_margin
        self.last_contrast: torch.Tensor | None = None  # the hinge of the last loss with twins (for the log)
        self.attention_grounding = attention_grounding
        self.grounding_noise_power = grounding_noise_power
        self.last_grounding: torch.Tensor | None = None  # the grounding loss of the last loss with it (the log)
        self.ema = EMA(self.trained, ema_decay) if ema_decay else None
        self.step_count = 0

    def set_progress(self, progress: float) -> float:
        """Linear warm-up, then cosine decay to ``min_lr_ratio`` as ``progress`` goes 0 → 1; returns the lr."""
        warm = min(1.0, (self.step_count + 1) / max(1, self.warmup_steps))
        p = min(max(progress, 0.0), 1.0)
        lr = self.base_lr * warm * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def loss(
        self,
        latents: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        weighted: bool = True,
        generator: torch.Generator | None = None,
        weight: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
        contrast: dict[str, torch.Tensor] | None = None,
        grounding: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The denoising loss on scaled latents (optionally Min-SNR-γ weighted; ``weight``: per latent element,
        broadcast to the latents, or a function of the clean latents the prediction implies, x̂₀, detached, that
        returns it); noise and timesteps not given are drawn from ``generator`` (timesteps first).

        ``contrast`` (``rows`` and the twins' tokens of those rows, :meth:`CaptionTokens.sample`): plus
        ``binding_contrast`` × the mean over those rows of max(0, margin − (L_twin − L) / L), L and L_twin each
        row's plain MSE under its caption and under its twin (L held fixed in the denominator).

        ``grounding`` (``token_objects`` B×tokens, ``masks`` B×objects×h×w): plus ``attention_grounding`` × the
        :func:`~kolors.recipe.grounding.grounding_loss` of the cross-attention maps of the rows whose caption names
        objects, each row weighing (t / T)^``grounding_noise_power`` in its mean (0: all alike)."""
        b = latents.shape[0]
        if timesteps is None:
            timesteps = sample_timesteps(b, self.num_train_timesteps, shift=self.timestep_shift, device=latents.device,
                                         generator=generator)
        if noise is None:
            noise = training_noise(latents, offset=self.noise_offset, pyramid=self.pyramid_noise, generator=generator)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        rows = contrast["rows"] if contrast is not None and self.binding_contrast else timesteps[:0]
        grounded = timesteps[:0]
        if grounding is not None and self.attention_grounding:
            grounded = torch.nonzero(grounding["token_objects"].any(dim=1)).flatten()
        maps = CrossAttentionMaps()
        with maps.recording(self.unet, grounded) if len(grounded) else contextlib.nullcontext():
            if len(rows):  # the twins' rows ride in the same forward pass (one call of 20 rows costs less than 16 + 4)
                pred = self.predict(torch.cat([noisy, noisy[rows]]), torch.cat([timesteps, timesteps[rows]]),
                                    *(torch.cat([main, contrast[key]]) for main, key in
                                      ((input_ids, "input_ids"), (attention_mask, "attention_mask"),
                                       (position_ids, "position_ids"))))
                pred, twin = pred[:b], pred[b:]
            else:
                pred = self.predict(noisy, timesteps, input_ids, attention_mask, position_ids)
        kind = self.scheduler.config.prediction_type
        if callable(weight) and weighted:
            weight = weight(predicted_sample(pred.detach(), noisy, timesteps, alphas_cumprod=self.alphas_cumprod,
                                             prediction_type=kind))
        target = prediction_target(self.scheduler, latents, noise, timesteps)
        loss = diffusion_loss(pred, target, timesteps, alphas_cumprod=self.alphas_cumprod,
                              snr_gamma=self.min_snr_gamma if weighted else None, prediction_type=kind,
                              weight=weight if weighted else None)
        if len(rows):
            true_mse = (pred[rows].float() - target[rows].float()).pow(2).flatten(1).mean(1)
            twin_mse = (twin.float() - target[rows].float()).pow(2).flatten(1).mean(1)
            gap = (twin_mse - true_mse) / true_mse.detach().clamp_min(1e-8)
            self.last_contrast = F.relu(self.binding_margin - gap).mean()
            loss = loss + self.binding_contrast * self.last_contrast
        if len(grounded):
            self.last_grounding = grounding_loss(maps.maps, grounding["token_objects"][grounded],
                                                 grounding["masks"][grounded],
                                                 noise_weights(timesteps[grounded], self.grounding_noise_power))
            loss = loss + self.attention_grounding * self.last_grounding
        return loss

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """The UNet's prediction for ``noisy`` at ``timesteps`` under the captions' tokens (autocast as set)."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            tokens, pooled = encode_text(self.text_encoder, input_ids, attention_mask, position_ids)
            ids = time_ids(noisy.shape[0], self.image_size, device=noisy.device)
            return self.unet(noisy, timesteps, encoder_hidden_states=tokens,
                             added_cond_kwargs={"text_embeds": pooled, "time_ids": ids}).sample

    def step(self, latents, input_ids, attention_mask, position_ids, *, progress: float,
             timesteps: torch.Tensor | None = None, generator: torch.Generator | None = None,
             weight: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
             contrast: dict[str, torch.Tensor] | None = None,
             grounding: dict[str, torch.Tensor] | None = None) -> tuple[float, float]:
        """One AdamW step (``timesteps`` and noise: default drawn as :meth:`loss` does); returns (loss, lr)."""
        lr = self.set_progress(progress)
        loss = self.loss(latents, input_ids, attention_mask, position_ids, timesteps=timesteps, generator=generator,
                         weight=weight, contrast=contrast, grounding=grounding)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.trained, self.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        self.step_count += 1
        return loss.detach(), lr

    @torch.no_grad()
    def fixed_loss(self, batch: dict[str, torch.Tensor], *, seed: int = 1234) -> float:
        """Unweighted loss on a fixed batch with fixed noise and timesteps (a comparable validation number)."""
        was_training = self.unet.training
        self.unet.eval()
        self.text_encoder.eval()
        g = torch.Generator(device="cpu").manual_seed(seed)
        lat = batch["latents"]
        noise = torch.randn(lat.shape, generator=g).to(lat.device)
        ts = torch.linspace(50, self.num_train_timesteps - 50, lat.shape[0]).long().to(lat.device)
        value = float(
            self.loss(lat, batch["input_ids"], batch["attention_mask"], batch["position_ids"], noise=noise,
                      timesteps=ts, weighted=False)
        )
        if was_training:
            self.unet.train()
            self.text_encoder.train()
        return value

    def ema_copies(self) -> tuple[UNet2DConditionModel, ChatGLMModel]:
        """fp32 CPU copies of UNet and text encoder carrying the EMA weights (the live ones without EMA)."""
        import copy

        unet = copy.deepcopy(self.unet).float().cpu().eval()
        te = copy.deepcopy(self.text_encoder).float().cpu().eval()
        if self.ema is not None:
            index = {id(p): i for i, p in enumerate(self.trained)}
            live = list(self.unet.parameters()) + list(self.text_encoder.parameters())
            copies = list(unet.parameters()) + list(te.parameters())
            with torch.no_grad():
                for p_live, p_copy in zip(live, copies):
                    i = index.get(id(p_live))
                    if i is not None:
                        p_copy.copy_(self.ema.shadow[i].cpu())
        return unet, te

    def state_dict(self) -> dict:
        return {
            "unet": self.unet.state_dict(),
            "text_encoder": self.text_encoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "step": self.step_count,
        }

    def load_state_dict(self, state: dict) -> None:
        self.unet.load_state_dict(state["unet"])
        self.text_encoder.load_state_dict(state["text_encoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.step_count = state["step"]

