"""Kolors prompt encoding: ChatGLM3 over 256 left-padded tokens."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..models.chatglm import ChatGLMModel, ChatGLMTokenizer

logger = logging.getLogger("kolors")

MAX_TOKENS = 256


@dataclass
class PromptEmbeddings:
    """Token embeddings (B, 256, hidden) from the second-to-last layer and pooled (B, hidden) from the last."""

    tokens: torch.Tensor
    pooled: torch.Tensor

    @staticmethod
    def cat(parts: list[PromptEmbeddings]) -> PromptEmbeddings:
        """The batch made of ``parts`` in order."""
        return PromptEmbeddings(torch.cat([p.tokens for p in parts]), torch.cat([p.pooled for p in parts]))

    def repeat(self, n: int) -> PromptEmbeddings:
        """Each row repeated ``n`` times in place (row i becomes rows i*n … i*n+n-1)."""
        return PromptEmbeddings(self.tokens.repeat_interleave(n, 0), self.pooled.repeat_interleave(n, 0))


def count_dropped_tokens(tokenizer: ChatGLMTokenizer, prompt: str, max_tokens: int = MAX_TOKENS) -> int:
    """How many tokens of ``prompt`` do not fit in the ``max_tokens`` context (special tokens included)."""
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    return max(0, len(ids) - max_tokens)


def tokenize_prompts(tokenizer: ChatGLMTokenizer, prompts: list[str], *,
                     max_tokens: int = MAX_TOKENS) -> dict[str, torch.Tensor]:
    """Token ids, attention mask and position ids, left-padded to ``max_tokens`` as KolorsPipeline makes them."""
    inputs = tokenizer(prompts, padding="max_length", max_length=max_tokens, truncation=True, return_tensors="pt")
    return {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids")}


def encode_tokens(text_encoder: ChatGLMModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  position_ids: torch.Tensor) -> PromptEmbeddings:
    """Kolors text conditioning of tokenized prompts (differentiable: training uses it with gradients)."""
    out = text_encoder(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        output_hidden_states=True,
    )
    # ChatGLM is sequence-first: hidden states are (tokens, batch, hidden).
    tokens = out.hidden_states[-2].permute(1, 0, 2).contiguous()
    pooled = out.hidden_states[-1][-1].clone()
    return PromptEmbeddings(tokens, pooled)


@torch.no_grad()
def encode_prompts(
    tokenizer: ChatGLMTokenizer,
    text_encoder: ChatGLMModel,
    prompts: list[str],
    *,
    device: torch.device,
    max_tokens: int = MAX_TOKENS,
    what: str = "prompt",
) -> PromptEmbeddings:
    """Kolors text conditioning for each prompt; warns when a prompt (``what``: "prompt", "negative prompt") is cut
    at ``max_tokens``."""
    for prompt in dict.fromkeys(prompts):
        dropped = count_dropped_tokens(tokenizer, prompt, max_tokens)
        if dropped:
            logger.warning(
                "%s is longer than the %d-token context: the last %d tokens are dropped (%r…)",
                what, max_tokens, dropped, prompt[:40],
            )
    inputs = tokenize_prompts(tokenizer, prompts, max_tokens=max_tokens)
    return encode_tokens(text_encoder, **{k: v.to(device) for k, v in inputs.items()})
