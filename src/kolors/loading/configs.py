"""Sanity checks of a model folder's configs: the keys that shape each component, with their types and ranges.

A damaged, hand-edited or hostile config becomes one :class:`ModelLayoutError` naming the file, the key and the
value, before the component is built: a string where a list of widths belongs is not an error deep inside
diffusers, and a layer count of a trillion cannot hang the process while the model is built. The bounds are far
above any published model (Kolors: 28 ChatGLM3 layers of width 4096, UNet widths up to 1280).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import ModelLayoutError

COUNT = 1024  # layers, heads, blocks per level
WIDTH = 1 << 17  # channels, hidden sizes
TOKENS = 1 << 21  # vocabulary sizes, sequence lengths

# key -> (kind, low, high). Kinds: int; ints (an int or a list of them); list (a non-empty list of ints);
# nested (an int, or a list of ints or of lists of ints); float (finite); names (a list of strings).
# Every key may be absent or null (the class's default is then used).
Rules = dict[str, tuple[str, float, float]]
UNET: Rules = {
    "in_channels": ("int", 1, 64), "out_channels": ("int", 1, 64), "sample_size": ("ints", 1, 4096),
    "block_out_channels": ("list", 1, WIDTH), "layers_per_block": ("ints", 1, COUNT),
    "transformer_layers_per_block": ("nested", 0, COUNT), "attention_head_dim": ("ints", 1, WIDTH),
    "num_attention_heads": ("ints", 1, COUNT), "cross_attention_dim": ("ints", 1, WIDTH),
    "encoder_hid_dim": ("int", 1, WIDTH), "addition_time_embed_dim": ("int", 1, WIDTH),
    "projection_class_embeddings_input_dim": ("int", 1, TOKENS), "norm_num_groups": ("int", 1, COUNT),
    "conditioning_channels": ("int", 1, 64), "conditioning_embedding_out_channels": ("list", 1, WIDTH),
    "down_block_types": ("names", 0, 0), "up_block_types": ("names", 0, 0),
}
VAE: Rules = {
    "in_channels": ("int", 1, 64), "out_channels": ("int", 1, 64), "latent_channels": ("int", 1, 64),
    "block_out_channels": ("list", 1, WIDTH), "layers_per_block": ("int", 1, COUNT),
    "norm_num_groups": ("int", 1, COUNT), "sample_size": ("ints", 1, 1 << 16),
    "scaling_factor": ("float", 1e-6, 1e6), "shift_factor": ("float", -1e6, 1e6),
    "down_block_types": ("names", 0, 0), "up_block_types": ("names", 0, 0),
}
TEXT_ENCODER: Rules = {
    "hidden_size": ("int", 1, WIDTH), "ffn_hidden_size": ("int", 1, 4 * WIDTH), "kv_channels": ("int", 1, WIDTH),
    "num_attention_heads": ("int", 1, COUNT), "multi_query_group_num": ("int", 1, COUNT),
    "num_layers": ("int", 1, COUNT), "padded_vocab_size": ("int", 1, TOKENS), "vocab_size": ("int", 1, TOKENS),
    "seq_length": ("int", 1, TOKENS), "layernorm_epsilon": ("float", 0, 1),
}
SCHEDULER: Rules = {
    "num_train_timesteps": ("int", 1, 100_000), "beta_start": ("float", 0, 1), "beta_end": ("float", 0, 1),
    "steps_offset": ("int", 0, 100_000),
}
DEFAULTS: Rules = {  # kolors_defaults.json
    "width": ("int", 8, 16384), "height": ("int", 8, 16384), "steps": ("int", 1, 10_000),
    "guidance": ("float", 0, 1000), "guidance_stop": ("float", 0, 1),
}


def check_config(config: dict[str, Any], rules: Rules, path: Path) -> dict[str, Any]:
    """``config`` (read from ``path``), after checking the keys ``rules`` names; a one-line error otherwise."""
    for key, (kind, low, high) in rules.items():
        value = config.get(key)
        if value is not None and not _fits(value, kind, low, high):
            raise ModelLayoutError(f"{path}: '{key}' must be {_describe(kind, low, high)}, got "
                                   f"{_short(value)}: fix the file or download it again")
    return config


def _fits(value: Any, kind: str, low: float, high: float) -> bool:
    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high

    if kind == "int":
        return whole(value)
    if kind == "float":
        return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                and low <= value <= high)
    if kind == "names":
        return isinstance(value, list) and len(value) <= 64 and all(isinstance(v, str) for v in value)
    if whole(value):
        return kind in ("ints", "nested")
    if not isinstance(value, list) or not 0 < len(value) <= 64:
        return False
    if kind == "nested":
        return all(whole(v) or (isinstance(v, list) and len(v) <= COUNT and all(map(whole, v))) for v in value)
    return all(map(whole, value))


def _describe(kind: str, low: float, high: float) -> str:
    bounds = f"{low:g} to {high:g}"
    return {"int": f"a whole number from {bounds}", "float": f"a number from {bounds}",
            "ints": f"a whole number from {bounds} or a list of them",
            "list": f"a list of whole numbers from {bounds}",
            "nested": f"a whole number from {bounds}, or a list of them (or of lists of them)",
            "names": "a list of names"}[kind]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
