"""``--init-from``: start a run from a model the recipe exported before, across tokenizers and UNet depths.

Each run trains its own tokenizer, which may number the same token differently or add tokens; the text encoder's
embedding rows are therefore carried over by token text, and rows of new tokens keep their fresh initialisation.
A UNet with more transformer blocks per attention block than the saved one (``--transformer-layers``) gets the saved
weights and its added blocks start as identities (their attention and feed-forward outputs zero, as a ControlNet's
zero convolutions start): the grown UNet computes exactly what the saved one did, and training adds from there.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import torch

from ..errors import KolorsError

__all__ = ["check_fits", "initialise_from", "load_grown", "weights_variant"]


def weights_variant(component_dir: Path) -> dict:
    """``variant="fp16"`` when the component folder has only fp16 weight files (as this recipe exports them)."""
    names = [p.name for p in Path(component_dir).iterdir()]
    plain = any(n in ("diffusion_pytorch_model.safetensors", "model.safetensors") for n in names)
    return {} if plain or not any(".fp16." in n for n in names) else {"variant": "fp16"}


def check_fits(folder: Path, arch: dict) -> None:
    """Refuse (KolorsError) an ``--init-from`` model whose configs do not fit the architecture ``arch`` that the
    command builds (as ``options.architecture`` gives it): read from its two config files, before anything loads.
    A shallower UNet fits (``load_grown``)."""
    from .export import check_exported_model

    folder = check_exported_model(folder, option="--init-from")
    for part, spec in (("text_encoder", arch["text_encoder"]), ("unet", arch["unet"])):
        path = folder / part / "config.json"
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            problem = None if isinstance(saved, dict) else "not a JSON object"
        except (OSError, ValueError) as exc:
            problem = str(exc)
        if problem:
            raise KolorsError(f"--init-from: cannot read {path} ({problem}): give the --out folder of a recipe run")
        for f in fields(spec):
            if f.name not in saved:
                continue
            ours, theirs = getattr(spec, f.name), saved[f.name]
            if f.name == "transformer_layers_per_block":
                depth = max(theirs) if isinstance(theirs, list) else theirs
                if depth > max(ours):
                    raise KolorsError(f"the --init-from UNet has {depth} transformer blocks in each attention block, "
                                      f"this command builds {max(ours)}: give --transformer-layers {depth} or more")
            elif (list(ours) if isinstance(ours, tuple) else ours) != theirs:
                raise KolorsError(f"the --init-from model is another architecture than this command builds ({part} "
                                  f"{f.name} {theirs}, here {ours}): give the --architecture it was trained with")


@torch.no_grad()
def load_grown(unet, state: dict[str, torch.Tensor]) -> list[str]:
    """Load a saved UNet's ``state`` into ``unet``, which may have more transformer blocks in each attention block;
    those start as identities. Returns the added blocks' names. Any other difference is a KolorsError."""
    own = unet.state_dict()
    added = sorted(own.keys() - state.keys())
    unknown = sorted(state.keys() - own.keys())
    reshaped = [k for k in state.keys() & own.keys() if state[k].shape != own[k].shape]
    if unknown or reshaped or any(".transformer_blocks." not in k for k in added):
        problem = (f"{len(unknown)} of its weights have no place here (e.g. {unknown[0]})" if unknown else
                   f"{reshaped[0]} has another shape" if reshaped else
                   f"this UNet has weights it lacks beyond added transformer blocks (e.g. "
                   f"{next(k for k in added if '.transformer_blocks.' not in k)})")
        depth = 1 + max((int(m.group(1)) for key in state
                         if (m := re.search(r"\.transformer_blocks\.(\d+)\.", key))), default=0)
        raise KolorsError(f"the --init-from UNet does not fit this architecture: {problem}; give the "
                          f"--architecture it was trained with and --transformer-layers {depth} or more (it has "
                          f"{depth} transformer blocks in each attention block)")
    unet.load_state_dict({**own, **state})
    blocks = sorted({re.match(r".*\.transformer_blocks\.\d+", key).group() for key in added})
    for name in blocks:
        block = unet.get_submodule(name)
        feed_forward_out = [m for m in block.ff.net if isinstance(m, torch.nn.Linear)][-1]
        for layer in (block.attn1.to_out[0], block.attn2.to_out[0], feed_forward_out):
            layer.weight.zero_()
            if layer.bias is not None:
                layer.bias.zero_()
    return blocks


@torch.no_grad()
def initialise_from(folder: Path, tokenizer, text_encoder, unet) -> dict:
    """Copy a saved model's UNet and text encoder into freshly built ones of the same architecture (or a UNet with
    more transformer blocks: ``load_grown``).

    The tokenizers may differ: each embedding row is carried over when the new tokenizer has a token of the same
    text; rows of new tokens keep their fresh initialisation.
    """
    from diffusers import UNet2DConditionModel

    from ..models.chatglm import ChatGLMModel
    from .tokenizer import load_tokenizer

    folder = Path(folder)
    old_unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"), **weights_variant(folder / "unet"))
    added = load_grown(unet, {k: v.float() for k, v in old_unet.state_dict().items()})
    old_te = ChatGLMModel.from_pretrained(str(folder / "text_encoder"), **weights_variant(folder / "text_encoder"))
    old_state = {k: v.float() for k, v in old_te.state_dict().items()}
    emb_key = "embedding.word_embeddings.weight"
    new_emb = text_encoder.state_dict()[emb_key].clone()
    old_vocab = load_tokenizer(folder / "tokenizer").get_vocab()
    carried = 0
    for token, new_id in tokenizer.get_vocab().items():
        old_id = old_vocab.get(token)
        if old_id is not None and old_id < old_state[emb_key].shape[0] and new_id < new_emb.shape[0]:
            new_emb[new_id] = old_state[emb_key][old_id]
            carried += 1
    old_state[emb_key] = new_emb
    # The LM head is unused by Kolors; it keeps the new vocabulary's shape.
    old_state["output_layer.weight"] = text_encoder.state_dict()["output_layer.weight"]
    text_encoder.load_state_dict(old_state)
    return {"rows": len(tokenizer.get_vocab()), "rows_carried": carried, "blocks_added": len(added)}
