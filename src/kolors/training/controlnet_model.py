"""ControlNet training (``kolors train`` with ``mode: controlnet``): the ControlNet that trains, and its folder.

The base model stays frozen; a diffusers ``ControlNetModel`` with the Kolors conditioning (``encoder_hid_dim_type``
"text_proj", ``addition_embed_type`` "text_time") learns to steer it. Its residuals go into the UNet exactly as at
generation (:func:`kolors.adapters.controlnet.controlnet_residuals`), so what trains is what generation runs.

Two shapes (``controlnet_blocks``):

* ``full``: diffusers' ``ControlNetModel.from_unet``: a copy of the UNet's encoder and middle block (the published
  Kolors ControlNets have this shape);
* ``light``: the same levels, widths and layers per level (so the residuals fit the UNet), but down blocks without
  attention (``DownBlock2D``) and a middle block of one ResNet (``UNetMidBlock2D``). About half the parameters of
  ``full`` for the built-in model; positions and outlines need no text attention. Its ResNets, downsamplers, time
  and size embeddings start as copies of the UNet's; its text projection is kept (the Kolors ControlNet layout
  has one) but unused by its blocks, so it stays frozen.

A new ControlNet's output convolutions start at zero, so its first step predicts exactly what the base model does,
and its control-image encoder's last convolution starts random (see ``build_controlnet``).

The result is a Kolors-ControlNet folder: ``config.json``, ``diffusion_pytorch_model.safetensors`` (fp32) and
``diffusion_pytorch_model.fp16.safetensors`` (the fp16 variant), read by ``kolors.adapters.controlnet.load_controlnet``,
``kolors generate --controlnet canny=DIR`` and diffusers' ``ControlNetModel.from_pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors.torch import save_file

from ..adapters.controlnet import load_controlnet
from ..files import atomic_file, write_text
from .config import TrainConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
FP16_WEIGHTS_FILE = "diffusion_pytorch_model.fp16.safetensors"
RESULT_FOLDER = "controlnet"
# diffusers' control-image encoder widths; one stride-2 step between each pair, so as many entries as the VAE
# downsamples by powers of two, plus one.
DEFAULT_CONDITIONING_CHANNELS = (16, 32, 96, 256)


def conditioning_channels(cfg: TrainConfig, vae_scale: int) -> tuple[int, ...]:
    """The control-image encoder widths: ``cfg.conditioning_channels``, else diffusers' default fitted to the VAE."""
    needed = vae_scale.bit_length()  # a scale of 2**k takes k stride-2 steps: k + 1 widths
    if cfg.conditioning_channels is not None:
        channels = tuple(cfg.conditioning_channels)
        if len(channels) != needed:
            from ..errors import InvalidParameterError

            raise InvalidParameterError(
                f"'conditioning_channels' needs {needed} widths for this model (its VAE downsamples {vae_scale}x), "
                f"got {len(channels)}: {list(channels)}")
        return channels
    base = DEFAULT_CONDITIONING_CHANNELS
    return tuple(base[:needed]) + (base[-1],) * max(0, needed - len(base))


def build_controlnet(cfg: TrainConfig, unet: UNet2DConditionModel, vae_scale: int) -> ControlNetModel:
    """The ControlNet to train, in fp32 on the UNet's device: loaded (``controlnet_from``) or made from the UNet."""
    device = next(unet.parameters()).device
    if cfg.controlnet_from:
        net = load_controlnet(cfg.controlnet_from, device, torch.float32, unet=unet, vae_scale_factor=vae_scale)
        return net.train().requires_grad_(True)
    channels = conditioning_channels(cfg, vae_scale)
    if cfg.controlnet_blocks == "full":
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels)
    else:
        net = _light_controlnet(unet, channels)
    # diffusers zero-initialises the control-image encoder's last convolution as well as the output convolutions.
    # Behind zero output convolutions the base model's prediction is unchanged at step 0 either way, but with both
    # at zero the gradient reaching either is proportional to the other: the control image only starts to matter
    # after a long stall. A random last convolution lets the control reach the ControlNet's blocks from step 1.
    net.controlnet_cond_embedding.conv_out.reset_parameters()
    return net.to(device=device, dtype=torch.float32).train()


def _light_controlnet(unet: UNet2DConditionModel, channels: tuple[int, ...]) -> ControlNetModel:
    """A ControlNet with the UNet's levels but no attention, its matching weights copied from the UNet."""
    template = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels,
                                         load_weights_from_unet=False)
    config = {k: v for k, v in template.config.items() if not k.startswith("_")}
    config.update(down_block_types=["DownBlock2D"] * len(config["down_block_types"]), mid_block_type="UNetMidBlock2D")
    net = ControlNetModel.from_config(config)
    ours = net.state_dict()
    # the ResNets and downsamplers keep their names without attention; the light middle block is the UNet's
    # first middle ResNet
    theirs = {k: v for k, v in unet.state_dict().items()
              if not k.startswith("mid_block.") or k.startswith("mid_block.resnets.0.")}
    copied = {k: v for k, v in theirs.items() if k in ours and ours[k].shape == v.shape}
    net.load_state_dict(copied, strict=False)
    return net


def trainable_parameters(net: ControlNetModel) -> list[torch.nn.Parameter]:
    """The parameters that train: all, except a text projection that no block of the ControlNet reads."""
    reads_text = (any(getattr(block, "has_cross_attention", False) for block in net.down_blocks)
                  or bool(getattr(net.mid_block, "has_cross_attention", False)))
    net.requires_grad_(True)
    if not reads_text and net.encoder_hid_proj is not None:
        net.encoder_hid_proj.requires_grad_(False)
    return [p for p in net.parameters() if p.requires_grad]


def save_controlnet(net: ControlNetModel, folder: Path, state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``folder`` as a Kolors-ControlNet folder: config.json, fp32 weights and the fp16 variant."""
    folder.mkdir(parents=True, exist_ok=True)
    state = net.state_dict() if state is None else state
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
    with atomic_file(folder / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    half = {k: v.half().contiguous() for k, v in tensors.items()}
    with atomic_file(folder / FP16_WEIGHTS_FILE) as tmp:
        save_file(half, str(tmp), metadata={"format": "pt"})
    config = json.loads(net.to_json_string())  # with _class_name and _diffusers_version, as save_pretrained writes
    config.pop("_name_or_path", None)
    write_text(folder / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder
