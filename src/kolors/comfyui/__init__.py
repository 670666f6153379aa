"""ComfyUI nodes for the Kolors family: the node classes ComfyUI loads (``NODE_CLASS_MAPPINGS``).

The custom-node folder ``comfyui/`` at the top of this repository imports this package (see the README's
ComfyUI section). Importing it is cheap: the nodes import the rest of kolors (torch, diffusers) when they first
run, and nothing is ever downloaded.
"""

from __future__ import annotations

from . import folders
from .adapter_nodes import KolorsApplyControlNet, KolorsControlNetLoader, KolorsFaceID, KolorsIPAdapter, KolorsLoRA, \
    KolorsPAG
from .latent_nodes import KolorsVAEDecode, KolorsVAEEncode
from .loader_nodes import KolorsModelLoader, KolorsSingleFileLoader, KolorsStockVAE
from .map_nodes import KolorsCannyMap, KolorsDepthMap, KolorsPoseMap
from .prompt_nodes import KolorsSizeConditioning, KolorsTextEncode
from .sampler_node import KolorsSampler

NODE_DISPLAY_NAME_MAPPINGS = {
    "KolorsModelLoader": "Kolors Model Loader",
    "KolorsSingleFileLoader": "Kolors Model Loader (single files)",
    "KolorsStockVAE": "Kolors VAE (for stock nodes)",
    "KolorsTextEncode": "Kolors Text Encode",
    "KolorsSizeConditioning": "Kolors Size Conditioning (SDXL)",
    "KolorsSampler": "Kolors Sampler",
    "KolorsVAEDecode": "Kolors VAE Decode",
    "KolorsVAEEncode": "Kolors VAE Encode",
    "KolorsLoRA": "Kolors LoRA",
    "KolorsControlNetLoader": "Kolors ControlNet Loader",
    "KolorsApplyControlNet": "Kolors Apply ControlNet",
    "KolorsIPAdapter": "Kolors IP-Adapter",
    "KolorsFaceID": "Kolors FaceID",
    "KolorsPAG": "Kolors PAG (perturbed-attention guidance)",
    "KolorsCannyMap": "Kolors Canny Map",
    "KolorsDepthMap": "Kolors Depth Map",
    "KolorsPoseMap": "Kolors Pose Map",
}
NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    KolorsModelLoader, KolorsSingleFileLoader, KolorsStockVAE, KolorsTextEncode, KolorsSizeConditioning, KolorsSampler,
    KolorsVAEDecode, KolorsVAEEncode, KolorsLoRA, KolorsControlNetLoader, KolorsApplyControlNet, KolorsIPAdapter,
    KolorsFaceID, KolorsPAG, KolorsCannyMap, KolorsDepthMap, KolorsPoseMap)}

folders.register()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
