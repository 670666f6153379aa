"""Tiny ControlNets for the tiny Kolors checkpoints, in the published Kolors-ControlNet layout."""

from __future__ import annotations

import math

import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from kolors.devices import move


def tiny_controlnet(unet: UNet2DConditionModel, seed: int) -> ControlNetModel:
    """A ControlNet made from the tiny UNet, with random (not zero) output convolutions so it has an effect."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # One stride-2 step in the control-image encoder: the tiny VAE downsamples 2x (Kolors' 8x).
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    gen = torch.Generator().manual_seed(seed)
    zeroed = [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]
    with torch.no_grad():
        for module in zeroed:
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / math.sqrt(module.weight[0].numel()))
            module.bias.copy_(0.02 * torch.randn(module.bias.shape, generator=gen))
        for param in net.parameters():
            param.copy_(param.half().float())  # fp16-exact, so the fp16 file holds the same values
    return net.eval()


def save_controlnet(net: ControlNetModel, folder) -> None:
    """config.json + diffusion_pytorch_model.fp16.safetensors, as the Kolors-ControlNet repositories hold."""
    move(net, torch.float16).save_pretrained(folder, variant="fp16")
    move(net, torch.float32)
