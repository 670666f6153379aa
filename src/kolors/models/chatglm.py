"""The ChatGLM3 text encoder and tokenizer used by Kolors.

diffusers ships a faithful implementation (``ChatGLMModel``, ``ChatGLMTokenizer``); this module is the one
place the project imports it from, so the rest of the code never depends on where diffusers keeps it.
"""

from __future__ import annotations

import torch
from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig, ChatGLMModel
from diffusers.pipelines.kolors.tokenizer import ChatGLMTokenizer

__all__ = ["CHATGLM3_ARCHITECTURE", "ChatGLMConfig", "ChatGLMModel", "ChatGLMTokenizer", "chatglm3_config",
           "init_chatglm_weights"]

# The architecture switches of ChatGLM3-6B as its published config.json sets them; only the sizes vary between
# the real encoder and the small ones this project builds.
CHATGLM3_ARCHITECTURE = dict(
    multi_query_attention=True,
    add_qkv_bias=True,
    add_bias_linear=False,
    rmsnorm=True,
    original_rope=True,
    post_layer_norm=True,
    apply_residual_connection_post_layernorm=False,
    apply_query_key_layer_scaling=True,
    attention_softmax_in_fp32=True,
    fp32_residual_connection=False,
    bias_dropout_fusion=True,
    layernorm_epsilon=1e-5,
)


def chatglm3_config(**sizes) -> ChatGLMConfig:
    """A ChatGLM3-architecture config with the given sizes (num_layers, hidden_size, …) and no dropout."""
    return ChatGLMConfig(**CHATGLM3_ARCHITECTURE, hidden_dropout=0.0, attention_dropout=0.0, **sizes)


@torch.no_grad()
def init_chatglm_weights(model: ChatGLMModel, std: float = 0.02, embedding_std: float = 1.0) -> None:
    """Initialise every parameter of a freshly built ChatGLMModel (its constructor leaves them empty)."""
    for name, param in model.named_parameters():
        if name.endswith("norm.weight") or "layernorm" in name:
            param.fill_(1.0)
        elif name.endswith(".bias"):
            param.zero_()
        elif "word_embeddings" in name:
            param.normal_(0.0, embedding_std)
        else:
            param.normal_(0.0, std)
