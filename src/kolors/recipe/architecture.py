"""The built-in model's architecture: a ChatGLM3-shaped text encoder, an SDXL-shaped UNet with the Kolors
conditioning (``text_proj`` of the token embeddings, ``text_time`` added conditioning) and a small KL autoencoder,
at two sizes (``full``: the shipped model; ``tiny``: tests), plus the scheduler config of the published folders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel

from ..models.chatglm import ChatGLMModel, chatglm3_config, init_chatglm_weights
from .autoencoder import VAESpec

__all__ = [
    "KOLORS_SCHEDULER_CONFIG",
    "scheduler_config",
    "MAX_TOKENS",
    "TextEncoderSpec",
    "UNetSpec",
    "ARCHITECTURES",
    "size_multiple",
    "build_text_encoder",
    "build_unet",
]

MAX_TOKENS = 256

# The scheduler config of the published Kolors folders (EulerDiscreteScheduler).
KOLORS_SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.014,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "dynamic_thresholding_ratio": 0.995,
    "interpolation_type": "linear",
    "num_train_timesteps": 1100,
    "prediction_type": "epsilon",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "thresholding": False,
    "timestep_spacing": "leading",
    "timestep_type": "discrete",
    "trained_betas": None,
    "use_karras_sigmas": False,
}


def scheduler_config(prediction_type: str = "epsilon", zero_terminal_snr: bool = False) -> dict:
    """The Kolors scheduler config, optionally with v-prediction and a zero-terminal-SNR noise schedule.

    Zero terminal SNR (Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed", 2023) rescales
    the betas so that the last training timestep is pure noise, and samples from it ("trailing" timestep spacing):
    the first sampling step then sees nothing of the image, exactly as in training, so the prompt alone must set
    what the seed's noise decides otherwise (background, layout). It needs v-prediction (an epsilon model cannot
    predict anything from pure noise).
    """
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be epsilon or v_prediction, not {prediction_type!r}")
    if zero_terminal_snr and prediction_type != "v_prediction":
        raise ValueError("a zero-terminal-SNR schedule needs v_prediction")
    config = dict(KOLORS_SCHEDULER_CONFIG, prediction_type=prediction_type)
    if zero_terminal_snr:
        config.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    return config


@dataclass
class TextEncoderSpec:
    """A ChatGLM3-shaped encoder (RMSNorm, rotary, multi-query attention with qkv bias, SwiGLU), scaled down."""

    num_layers: int = 3
    hidden_size: int = 192
    ffn_hidden_size: int = 512
    kv_channels: int = 32
    num_attention_heads: int = 6
    multi_query_group_num: int = 2
    seq_length: int = MAX_TOKENS


@dataclass
class UNetSpec:
    """An SDXL-shaped UNet (no attention at the first level, linear projections, text_proj + text_time)."""

    block_out_channels: tuple[int, ...] = (64, 96, 128)
    layers_per_block: int = 2
    transformer_layers_per_block: tuple[int, ...] = (1, 1, 1)
    head_dim: int = 32
    cross_attention_dim: int = 128
    addition_time_embed_dim: int = 16
    norm_num_groups: int = 32


def build_text_encoder(spec: TextEncoderSpec, vocab_size: int, *, seed: int = 0) -> ChatGLMModel:
    """A ChatGLMModel with every parameter initialised here (its constructor leaves them uninitialised)."""
    if spec.num_layers < 2:
        raise ValueError("the text encoder needs at least 2 layers (Kolors reads hidden_states[-2])")
    if spec.seq_length < MAX_TOKENS:
        raise ValueError(f"seq_length must be at least {MAX_TOKENS}")
    config = chatglm3_config(
        num_layers=spec.num_layers,
        padded_vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        ffn_hidden_size=spec.ffn_hidden_size,
        kv_channels=spec.kv_channels,
        num_attention_heads=spec.num_attention_heads,
        multi_query_group_num=spec.multi_query_group_num,
        seq_length=spec.seq_length,
        use_cache=False,
        architectures=["ChatGLMModel"],
    )
    model = ChatGLMModel(config)
    fork = torch.random.fork_rng(devices=[])
    with fork:
        torch.manual_seed(seed)
        init_chatglm_weights(model, std=0.02, embedding_std=1.0)
        with torch.no_grad():
            # Residual-branch outputs start smaller so the stack begins close to the identity.
            scale = 1.0 / math.sqrt(2 * spec.num_layers)
            for name, param in model.named_parameters():
                if name.endswith("self_attention.dense.weight") or name.endswith("mlp.dense_4h_to_h.weight"):
                    param.mul_(scale)
    return model


def build_unet(spec: UNetSpec, *, text_hidden_size: int, image_size: int, seed: int = 0) -> UNet2DConditionModel:
    """The Kolors UNet layout: text_proj of the token embeddings, text_time added conditioning."""
    n = len(spec.block_out_channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    # diffusers' attention_head_dim is the number of heads (Kolors: [5, 10, 20] for 64-wide heads).
    heads = tuple(max(1, c // spec.head_dim) for c in spec.block_out_channels)
    fork = torch.random.fork_rng(devices=[])
    with fork:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=image_size // 8,
            in_channels=4,
            out_channels=4,
            down_block_types=down,
            up_block_types=up,
            block_out_channels=tuple(spec.block_out_channels),
            layers_per_block=spec.layers_per_block,
            transformer_layers_per_block=tuple(spec.transformer_layers_per_block),
            attention_head_dim=heads,
            cross_attention_dim=spec.cross_attention_dim,
            encoder_hid_dim=text_hidden_size,
            encoder_hid_dim_type="text_proj",
            addition_embed_type="text_time",
            addition_time_embed_dim=spec.addition_time_embed_dim,
            projection_class_embeddings_input_dim=6 * spec.addition_time_embed_dim + text_hidden_size,
            use_linear_projection=True,
            norm_num_groups=spec.norm_num_groups,
            act_fn="silu",
            flip_sin_to_cos=True,
            freq_shift=0,
        )
    return unet


def size_multiple(arch: dict) -> int:
    """The image sides ``arch`` can train on are multiples of this: the VAE halves the side at each block but the
    last, the UNet at each block but the last."""
    return 2 ** (len(arch["vae"].block_out_channels) - 1) * 2 ** (len(arch["unet"].block_out_channels) - 1)


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
