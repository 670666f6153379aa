"""Original (LDM/SGM) SDXL UNet key names for a diffusers UNet state dict, to test single-file loading.

The naming is the public SDXL checkpoint convention: input_blocks / middle_block / output_blocks, ResNet
in_layers / emb_layers / out_layers / skip_connection, transformer blocks unchanged.
"""

from __future__ import annotations

import re

import torch

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
       "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
       "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _resnet(rest: str) -> str:
    part, tail = rest.split(".", 1)
    return f"{RESNET[part]}.{tail}"


def to_ldm_keys(state: dict[str, torch.Tensor], layers_per_block: int, prefix: str = "model.diffusion_model."
                ) -> dict[str, torch.Tensor]:
    """``state`` renamed to original SDXL UNet keys (``prefix`` prepended)."""
    per_down, per_up = layers_per_block + 1, layers_per_block + 1
    out = {}
    for key, value in state.items():
        new = None
        for d, o in TOP.items():
            if key.startswith(d + "."):
                new = o + key[len(d):]
        if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            i, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"input_blocks.{per_down * i + j + 1}.0.{_resnet(rest)}"
        elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
            i, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"input_blocks.{per_down * i + j + 1}.1.{rest}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"input_blocks.{per_down * (int(m[1]) + 1)}.0.op.{m[2]}"
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            i, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"output_blocks.{per_up * i + j}.0.{_resnet(rest)}"
        elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
            i, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"output_blocks.{per_up * i + j}.1.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            i = int(m[1])
            has_attn = any(k.startswith(f"up_blocks.{i}.attentions.") for k in state)
            new = f"output_blocks.{per_up * i + layers_per_block}.{2 if has_attn else 1}.conv.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
            new = f"middle_block.1.{m[1]}"
        elif key.startswith("encoder_hid_proj."):
            new = key
        if new is None:
            raise KeyError(f"no original SDXL name for {key}")
        out[prefix + new] = value
    return out


VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
VAE_TOP = {"conv_norm_out": "norm_out"}


def vae_to_ldm_keys(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderKL`` state dict in the original (LDM) VAE names, as single-file VAEs such as
    ``sdxl_vae.safetensors`` hold them: ``encoder.down.<i>.block.<j>``, ``decoder.up.<n-1-i>`` (the decoder's levels
    counted from the lowest resolution), ``mid.block_1/2`` and ``mid.attn_1`` with 1×1-convolution q/k/v/proj_out."""
    levels = 1 + max(int(m[1]) for k in state if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k)))
    out = {}
    for key, value in state.items():
        side, rest = key.split(".", 1)
        new = rest
        if m := re.match(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(.*)", rest):
            level = int(m[2]) if m[1] == "down" else levels - 1 - int(m[2])
            new = f"{m[1]}.{level}.block.{m[3]}.{VAE_RESNET.get(m[4], m[4])}.{m[5]}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", rest):
            new = f"down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", rest):
            new = f"up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(\w+)\.(.*)", rest):
            new = f"mid.block_{int(m[1]) + 1}.{VAE_RESNET.get(m[2], m[2])}.{m[3]}"
        elif m := re.match(r"mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.*)", rest):
            new = f"mid.attn_1.{VAE_ATTENTION[m[1]]}.{m[2]}"
            if m[1] != "group_norm" and m[2] == "weight":
                value = value[:, :, None, None]  # linear -> 1x1 convolution
        else:
            for d, o in VAE_TOP.items():
                if rest.startswith(d + "."):
                    new = o + rest[len(d):]
        out[prefix + (f"{side}.{new}" if side in ("encoder", "decoder") else key)] = value  # quant convs: as is
    return out
