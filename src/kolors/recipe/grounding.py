"""``--attention-grounding``: the words that name an object look at that object.

The UNet's cross-attention has no notion of which colour word goes with which noun; where a caption names two
objects, a pixel of one may read the other's colour or shape (docs/evaluation.md: two objects drawn as two of one
kind, or one object's colour leaking onto the other). The pool knows where each object is and which words name it,
so training can ask for it directly, as TokenCompose (Wang et al., CVPR 2024) does with segmentation masks: for each
token that names an object, the share of its cross-attention (averaged over heads, per layer) that falls outside
the object's cells is penalised, ``(1 − inside / total)²``, averaged over those tokens and every cross-attention
layer.

Pool side: :func:`caption_token_objects` (each token position's objects, a bit mask, from
:func:`kolors.data.object_words.object_spans`) and :func:`kolors.recipe.pool.object_masks` (each object's latent
cells). Training side: :class:`CrossAttentionMaps` (records the maps of one forward pass) and
:func:`grounding_loss`; :func:`attention_on_objects` measures the same (``word_probe``'s attention table).
"""

from __future__ import annotations

import contextlib
import unicodedata

import numpy as np
import torch
import torch.nn.functional as F

from ..data.object_words import object_spans
from ..data.shapes import Scene

__all__ = ["CrossAttentionMaps", "attention_on_objects", "caption_token_objects", "grounding_loss", "noise_weights"]


def caption_token_objects(tokenizer, scene: Scene, text: str, lang: str, length: int) -> np.ndarray:
    """uint8 ``length``: for each position of ``text`` tokenized as the pipeline does it (left-padded, the prefix
    tokens before the text), the objects of ``scene`` the token names (bit k: ``scene.shapes[k]``). All zeros where
    the pieces do not spell the text back (nothing is grounded rather than the wrong tokens)."""
    out = np.zeros(length, dtype=np.uint8)
    pieces = tokenizer.tokenize(text)
    spelt = "".join(p.replace("\u2581", " ") for p in pieces)
    text = unicodedata.normalize("NFKC", text)  # as SentencePiece reads it: "，" is ","
    if spelt != " " + text or len(pieces) + 2 > length:  # the dummy prefix's space; [gMASK] sop before the text
        return out
    spans = object_spans(scene, text, lang)
    at = -1  # piece offsets in ``text`` (the dummy prefix is at -1)
    first = length - len(pieces)
    for i, piece in enumerate(pieces):
        start, end = at, at + len(piece)
        at = end
        start += piece.startswith("\u2581")  # a piece's leading space names nothing
        bits = 0
        for s, e, objects in spans:
            if s < end and start < e:
                bits |= objects
        out[first + i] = bits
    return out


class CrossAttentionMaps:
    """Within ``with maps.recording(unet, rows):``, each cross-attention layer of ``unet`` also appends the
    attention probabilities of batch rows ``rows`` (R×cells×tokens, the mean over heads) to ``maps.maps``; the
    layers' own processors are put back on exit. The maps are recomputed from the layer's query and key
    projections beside the processor's own (fused) attention, which does not return them."""

    def __init__(self):
        self.maps: list[torch.Tensor] = []

    @contextlib.contextmanager
    def recording(self, unet: torch.nn.Module, rows: torch.Tensor):
        layers = [m for name, m in unet.named_modules() if name.endswith("attn2")]
        saved = [layer.processor for layer in layers]
        self.maps = []
        for layer, inner in zip(layers, saved):
            layer.processor = _Recorder(inner, self.maps, rows)
        try:
            yield self
        finally:
            for layer, inner in zip(layers, saved):
                layer.processor = inner


class _Recorder:
    def __init__(self, inner, sink: list, rows: torch.Tensor):
        self.inner, self.sink, self.rows = inner, sink, rows

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        out = self.inner(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
        q = attn.to_q(hidden_states[self.rows])
        k = attn.to_k(encoder_hidden_states[self.rows])
        r, n, t = q.shape[0], q.shape[1], k.shape[1]
        q = q.view(r, n, attn.heads, -1).transpose(1, 2)
        k = k.view(r, t, attn.heads, -1).transpose(1, 2)
        probs = (q @ k.transpose(-1, -2) * attn.scale).float().softmax(dim=-1)
        self.sink.append(probs.mean(dim=1))
        return out


def _on_objects(maps: list[torch.Tensor], token_objects: torch.Tensor, masks: torch.Tensor):
    """Per map (each R×cells×tokens, a square grid of cells), for each token that names objects (``token_objects``
    R×tokens bit masks; ``masks`` R×MAX_COUNT×h×w, pooled to the map's grid by area): (the share of the token's
    attention on its objects' cells, the share of the cells they cover)."""
    rows, tokens = torch.nonzero(token_objects).unbind(1)
    bits = token_objects[rows, tokens].long()
    which = ((bits[:, None] >> torch.arange(masks.shape[1], device=bits.device)) & 1).float()  # P×MAX_COUNT
    for a in maps:
        side = round(a.shape[1] ** 0.5)
        cells = F.adaptive_avg_pool2d(masks.float(), side).flatten(2)  # R×MAX_COUNT×cells
        region = (which[:, :, None] * cells[rows]).amax(dim=1)  # P×cells: the union of the token's objects
        attention = a[rows, :, tokens]  # P×cells
        yield (attention * region).sum(1) / attention.sum(1).clamp_min(1e-8), region.mean(1)


def grounding_loss(maps: list[torch.Tensor], token_objects: torch.Tensor, masks: torch.Tensor,
                   row_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the maps (each R×cells×tokens) and the tokens that name objects of (1 − inside / total)², where
    inside is the token's attention on the cells of its objects (``token_objects`` R×tokens bit masks, ``masks``
    R×MAX_COUNT×h×w, pooled to each map's grid by area) and total all of it. ``row_weights`` (R, ≥ 0): a weighted
    mean instead, each token weighing what its row does (the loss's scale is kept; only the rows' shares move)."""
    terms = [(1 - inside).pow(2) for inside, _ in _on_objects(maps, token_objects, masks)]
    if row_weights is None:
        row_weights = torch.ones(token_objects.shape[0], device=token_objects.device)
    w = row_weights[torch.nonzero(token_objects)[:, 0]].to(terms[0].dtype)
    return torch.stack([(w * t).sum() / w.sum().clamp_min(1e-8) for t in terms]).mean()


def noise_weights(timesteps: torch.Tensor, power: float) -> torch.Tensor:
    """Row weights for :func:`grounding_loss` in proportion to t^``power`` (1 each at 0), scaled so that the noisiest
    row weighs 1: a weighted mean does not see the scale, and a large power cannot underflow every row to 0."""
    share = timesteps.float() / timesteps.max().clamp_min(1).float()
    return share.pow(power)


def attention_on_objects(maps: list[torch.Tensor], token_objects: torch.Tensor, masks: torch.Tensor
                         ) -> tuple[float, float]:
    """(the mean share of an object-naming token's attention that falls on its objects, over the maps and those
    tokens; the share it would be with attention spread evenly over the cells, i.e. the objects' area)."""
    pairs = list(_on_objects(maps, token_objects, masks))
    return (float(torch.stack([inside.mean() for inside, _ in pairs]).mean()),
            float(torch.stack([area.mean() for _, area in pairs]).mean()))
