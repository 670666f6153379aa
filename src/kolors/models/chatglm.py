"""The ChatGLM3 text encoder and tokenizer used by Kolors.

diffusers ships a faithful implementation (``ChatGLMModel``, ``ChatGLMTokenizer``); this module is the one
place the project imports it from, so the rest of the code never depends on where diffusers keeps it.
"""

from __future__ import annotations

import torch
from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig, ChatGLMModel
from diffusers.pipelines.kolors.tokenizer import ChatGLMTokenizer

__all__ = ["ChatGLMConfig", "ChatGLMModel", "ChatGLMTokenizer", "init_chatglm_weights"]


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
