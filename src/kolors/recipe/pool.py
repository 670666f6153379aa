"""Training data of the built-in model: a pre-rendered pool of synthetic shape scenes with bilingual captions.

The pool is rendered once, in parallel worker processes, and reused by every stage: the VAE trains on its
images, the diffusion stage on their cached latents. Each scene gets ``captions_per_language`` captions in
each language (random wordings), tokenized in the workers exactly as the pipeline tokenizes prompts, so the
diffusion stage only indexes tensors: it picks a random language and wording for every sample.

With ``twins`` (``--binding-contrast``), every caption of a two-object scene also gets a *twin*: the same wording,
drawn from the same random state, for a scene the image is not. ``twins`` (``--binding-twin``) names the kinds, used
in turn over each scene's captions: ``exchange`` has the two objects' colours exchanged
(:func:`~kolors.data.shapes.exchange_colours`; only where the caption tells the objects apart, by shape or by where
each one is), a caption that names every word of the image but binds the colours to the wrong objects;
``one-shape`` gives both objects one of their shapes (:func:`~kolors.data.shapes.one_shape`), a caption that names
one kind of shape where the image has two. Captions with nothing to contrast are their own twins.

With ``grounding_factor`` (``--attention-grounding``), the pool also keeps which objects each caption token names
and each object's latent cells (:mod:`kolors.recipe.grounding`).
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..data.captions import TEMPLATES, caption, caption_with_template, template_slots
from ..data.examples import batch
from ..data.shapes import LANGS, MAX_COUNT, Scene, SceneMix, exchange_colours, one_shape, render_array, sample_scene
from .architecture import MAX_TOKENS
from .grounding import caption_token_objects

__all__ = [
    "LANGUAGES", "LAYOUT_BACKGROUNDS", "TOKEN_KEYS", "CONTRAST_KEYS", "TWIN_KINDS", "Pool", "latent_foreground",
    "object_masks", "layout_scene",
    "placed_caption", "caption_and_twin", "caption_corpus", "render_pool", "CaptionTokens", "scene_captions",
]

LANGUAGES = LANGS
CHUNK = 256
TOKEN_KEYS = ("input_ids", "attention_mask", "position_ids")
CONTRAST_KEYS = tuple(f"contrast_{k}" for k in TOKEN_KEYS)
TWIN_KINDS = ("exchange", "one-shape")


def scene_captions(scene: Scene, rng: np.random.Generator) -> tuple[str, ...]:
    """One caption of ``scene`` per language (wordings of the scene's own split)."""
    return tuple(caption(scene, lang, rng) for lang in LANGUAGES)


# The slot a caption must fill to say where the objects of a scene kind are (absolute position, relation).
_PLACE_SLOT = {"single": "pos", "pair": "rel"}


def placed_caption(scene: Scene, lang: str, rng: np.random.Generator, stated_position: float) -> str:
    """A caption of ``scene``; with probability ``stated_position`` (single and related pair scenes) one that states
    where its objects are. 0 keeps the templates' natural mix (and draws nothing extra from ``rng``)."""
    return _placed_caption_and_template(scene, lang, rng, stated_position)[0]


def _placed_caption_and_template(scene: Scene, lang: str, rng: np.random.Generator, stated_position: float
                                 ) -> tuple[str, str]:
    slot = _PLACE_SLOT.get(scene.kind)
    if stated_position > 0 and slot and not (slot == "rel" and scene.relation is None):
        if rng.random() < stated_position:
            return caption_with_template(scene, lang, rng, states=slot)
    return caption_with_template(scene, lang, rng)


def _tells_apart_by_place(template_id: str, lang: str) -> bool:
    """Whether the pair template ``lang/split/pair/k`` says where the objects are (a relation or each one's
    place)."""
    _, split, kind, k = template_id.split("/")
    return bool(template_slots(TEMPLATES[lang][split][kind][int(k)]) & {"rel", "p1", "p2"})


def caption_and_twin(scene: Scene, lang: str, rng: np.random.Generator, stated_position: float,
                     twin: str = "exchange", keep: int = 0) -> tuple[str, str]:
    """:func:`placed_caption` of ``scene`` and its ``twin`` (a kind of :data:`TWIN_KINDS`): the caption the same
    draws make for the scene changed by that kind — colours exchanged, or both objects the shape of object ``keep``.
    The twin is the caption itself where the change says nothing new: not a pair, one colour (exchange) or one shape
    (one-shape), or, for an exchange, two objects of one shape in a caption that does not say where each is ("a red
    circle and a blue circle"). ``rng`` advances as for the caption alone: the twin is drawn from a copy of its
    state."""
    changed = exchange_colours(scene) if twin == "exchange" else one_shape(scene, keep)
    state = copy.deepcopy(rng) if changed is not None else None
    text, template = _placed_caption_and_template(scene, lang, rng, stated_position)
    if state is None or (twin == "exchange" and scene.shapes[0].shape == scene.shapes[1].shape
                         and not _tells_apart_by_place(template, lang)):
        return text, text
    return text, placed_caption(changed, lang, state, stated_position)


# Layout scenes: one shape on one background (white unless --layout-background), so that where the shape is changes
# the mean image for a position word (its colour against the background, averaged over colours, keeps a large share
# of the contrast); with every attribute varying that first-order signal nearly cancels and position words stay
# unused (docs/evaluation.md).
LAYOUT_BACKGROUNDS = ("white",)


def layout_scene(rng: np.random.Generator, split: str = "train",
                 backgrounds: Sequence[str] = LAYOUT_BACKGROUNDS) -> Scene:
    """One shape of any colour that shows on its background, anywhere, on one of ``backgrounds`` (drawn evenly; a
    single background draws nothing for it, so a pool of one background is the same whichever way it is given)."""
    background = backgrounds[0] if len(backgrounds) == 1 else backgrounds[int(rng.integers(len(backgrounds)))]
    return sample_scene(rng, split, kind="single", background=background)


def caption_corpus(n_scenes: int, *, seed: int) -> list[str]:
    """Training-split captions of ``n_scenes`` random scenes in every language (no rendering): tokenizer data."""
    rng = np.random.default_rng([seed, 7])
    out = []
    for _ in range(n_scenes):
        out.extend(scene_captions(sample_scene(rng, "train"), rng))
    return out


@dataclass
class Pool:
    """``images``: uint8 N×H×W×3. Token tensors are N×languages×K×256 (ids int16, mask int8, positions int16).
    ``layout``: which scenes come from :func:`layout_scene` (bool N). ``contrast_*``: the tokens of each caption's
    twin, alike (None: a pool made without twins). ``token_objects``, ``object_masks``: what
    ``--attention-grounding`` reads (None: a pool made without)."""

    images: np.ndarray | None
    input_ids: np.ndarray
    attention_mask: np.ndarray
    position_ids: np.ndarray
    layout: np.ndarray
    contrast_input_ids: np.ndarray | None = None
    contrast_attention_mask: np.ndarray | None = None
    contrast_position_ids: np.ndarray | None = None
    token_objects: np.ndarray | None = None  # uint8 N×languages×K×256: the objects each token names (bit masks)
    object_masks: np.ndarray | None = None  # bool N×MAX_COUNT×h×w: each object's latent cells

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def _tokenize_np(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from .trainer import tokenize

    enc = tokenize(tokenizer, texts)
    return (
        enc["input_ids"].numpy().astype(np.int16),
        enc["attention_mask"].numpy().astype(np.int8),
        enc["position_ids"].numpy().astype(np.int16),
    )


_worker_tokenizer = None


def _render_chunk(args: tuple):
    global _worker_tokenizer
    (seed, n, split, size, k_caps, chunk_index, tokenizer_dir, stated_position, layout_share, layout_backgrounds,
     mix, twins, grounding_factor) = args
    from .tokenizer import load_tokenizer

    if _worker_tokenizer is None or _worker_tokenizer[0] != tokenizer_dir:
        _worker_tokenizer = (tokenizer_dir, load_tokenizer(Path(tokenizer_dir)))
    tokenizer = _worker_tokenizer[1]
    rng = np.random.default_rng([seed, chunk_index])
    images, _captions, scenes = batch(rng, n, split, size, mix=mix)
    # Layout scenes replace a share of the batch; their own stream keeps a pool without them unchanged.
    layout = np.zeros(n, dtype=bool)
    if layout_share > 0:
        layout_rng = np.random.default_rng([seed, chunk_index, 1])
        layout = layout_rng.random(n) < layout_share
        for i in np.flatnonzero(layout):
            scenes[i] = layout_scene(layout_rng, split, layout_backgrounds)
            images[i] = render_array(scenes[i], size)
    texts, twin_texts, objects = [], [], []
    for scene, stated in zip(scenes, np.where(layout, 1.0, stated_position)):
        for lang_index, lang in enumerate(LANGUAGES):
            for j in range(k_caps):
                if twins:  # the kinds in turn; a one-shape twin keeps either object's shape, by language and turn
                    text, twin = caption_and_twin(scene, lang, rng, stated, twin=twins[j % len(twins)],
                                                  keep=(lang_index + j // len(twins)) % 2)
                    texts.append(text)
                    twin_texts.append(twin)
                else:
                    texts.append(placed_caption(scene, lang, rng, stated))
                if grounding_factor:
                    objects.append(caption_token_objects(tokenizer, scene, texts[-1], lang, MAX_TOKENS))
    shape = (n, len(LANGUAGES), k_caps, -1)
    tokens = [a.reshape(shape) for a in _tokenize_np(tokenizer, texts)]
    if twins:
        tokens += [a.reshape(shape) for a in _tokenize_np(tokenizer, twin_texts)]
    grounding = None
    if grounding_factor:
        grounding = (np.stack(objects).reshape(shape),
                     np.stack([object_masks(scene, size, grounding_factor) for scene in scenes]))
    return np.asarray(images, dtype=np.uint8), layout, tokens, grounding


WORKER_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _default_signals() -> None:
    """A worker ignores Ctrl-C (the parent takes it and ends the pool) and dies at SIGTERM, as the pool's exit
    expects: with the parent's raising handler inherited by fork, a worker stopped waiting on the task queue's lock
    held it, and the pool's exit waited for the other worker for ever. The worker starts with both signals blocked
    (:func:`_workers`), so one sent before this ran (a short pool ends while its last workers start) is delivered
    now, to these handlers: under the inherited one it printed a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_SIGNALS)


def _workers(method: str, workers: int) -> mp.pool.Pool:
    """A pool of ``workers`` processes started by ``method`` with SIGINT/SIGTERM blocked until their initializer
    has set their own handlers; in this process a signal that arrives meanwhile is delivered when the pool is up."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
    try:
        return mp.get_context(method).Pool(workers, initializer=_default_signals)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def render_pool(
    n: int,
    *,
    tokenizer_dir: Path,
    split: str = "train",
    size: int = 128,
    seed: int = 0,
    captions_per_language: int = 2,
    workers: int | None = None,
    stated_position: float = 0.0,
    layout_share: float = 0.0,
    layout_backgrounds: Sequence[str] = LAYOUT_BACKGROUNDS,
    mix: SceneMix | None = None,
    twins: Sequence[str] = (),
    grounding_factor: int | None = None,
) -> Pool:
    """``n`` scenes of ``split`` at ``size`` px with tokenized captions; deterministic for a seed, any ``workers``.
    ``stated_position``: see :func:`placed_caption`. ``layout_share``: the share of scenes drawn by
    :func:`layout_scene` on ``layout_backgrounds``, every caption of which says where the shape is.
    ``mix``: how the other scenes are drawn (:class:`SceneMix`: kinds, counts, pairs; default: the dataset's own).
    ``twins``: also tokenize a twin of each caption, of these kinds of :data:`TWIN_KINDS` in turn (the module's
    docstring; none: no twins); the rest is unchanged. ``grounding_factor``: also each token's objects and each
    object's cells at 1/``grounding_factor`` of ``size`` (the VAE's downsampling), unchanged the rest."""
    twins = tuple(twins)
    if set(twins) - set(TWIN_KINDS):
        raise ValueError(f"twins must be some of {TWIN_KINDS}, not {twins}")
    jobs = [
        (seed, min(CHUNK, n - i), split, size, captions_per_language, k, str(tokenizer_dir), stated_position,
         layout_share, tuple(layout_backgrounds), mix, twins, grounding_factor)
        for k, i in enumerate(range(0, n, CHUNK))
    ]
    workers = max(1, min(workers or (os.cpu_count() or 1), len(jobs)))
    if workers == 1:
        parts = [_render_chunk(job) for job in jobs]
    else:
        # fork is fast and safe while CUDA is untouched; once it is initialised a child must start fresh.
        method = "spawn" if torch.cuda.is_available() and torch.cuda.is_initialized() else "fork"
        with _workers(method, workers) as pool:
            parts = pool.map(_render_chunk, jobs, chunksize=1)
    keys = TOKEN_KEYS + (CONTRAST_KEYS if twins else ())
    tokens = {key: np.concatenate([p[2][i] for p in parts]) for i, key in enumerate(keys)}
    if grounding_factor:
        tokens["token_objects"] = np.concatenate([p[3][0] for p in parts])
        tokens["object_masks"] = np.concatenate([p[3][1] for p in parts])
    return Pool(images=np.concatenate([p[0] for p in parts]), layout=np.concatenate([p[1] for p in parts]), **tokens)


def latent_foreground(images: np.ndarray, factor: int, *, tolerance: int = 8) -> np.ndarray:
    """bool N×(H/factor)×(W/factor): the latent cells whose factor×factor pixels hold anything but the background
    (a pixel more than ``tolerance`` from the image's corner colour in some channel). Scenes are flat shapes on one
    flat colour, so this is exact up to anti-aliasing. The same rule as the VAE stage's ``foreground_mask``, kept in
    numpy on the uint8 renders: through that torch mask it took 9× as long (47 s against 5 s per 10,000 scenes)."""
    n, h, w, _ = images.shape
    out = np.empty((n, h // factor, w // factor), dtype=bool)
    for i in range(0, n, CHUNK):
        x = images[i : i + CHUNK].astype(np.int16)
        differs = (np.abs(x - x[:, :1, :1]) > tolerance).any(axis=3)
        out[i : i + CHUNK] = differs.reshape(len(x), h // factor, factor, w // factor, factor).any(axis=(2, 4))
    return out


def object_masks(scene: Scene, size: int, factor: int, *, tolerance: int = 8) -> np.ndarray:
    """bool MAX_COUNT×(size/factor)×(size/factor): the latent cells each object of ``scene`` covers, drawn alone on
    the background (rows past the scene's objects are empty)."""
    alone = np.stack([render_array(replace(scene, shapes=(s,), kind="single", relation=None), size)
                      for s in scene.shapes])
    out = np.zeros((MAX_COUNT, size // factor, size // factor), dtype=bool)
    out[: len(scene.shapes)] = latent_foreground(alone, factor, tolerance=tolerance)
    return out


class CaptionTokens:
    """The pool's tokenized captions on the training device, plus the empty prompt for caption dropout."""

    def __init__(self, tokenizer, pool: Pool | dict, *, device: torch.device):
        from .trainer import tokenize

        get = (lambda k: getattr(pool, k)) if isinstance(pool, Pool) else pool.get
        self.input_ids = torch.as_tensor(get("input_ids")).to(device)
        self.attention_mask = torch.as_tensor(get("attention_mask")).to(device)
        self.position_ids = torch.as_tensor(get("position_ids")).to(device)
        twins = [get(k) for k in CONTRAST_KEYS]
        self.twins = None if twins[0] is None else [torch.as_tensor(t).to(device) for t in twins]
        objects = get("token_objects")
        self.token_objects = None if objects is None else torch.as_tensor(objects).to(device)
        empty = tokenize(tokenizer, [""])
        self.empty = {k: v.to(device) for k, v in empty.items()}
        self.n_languages, self.per_language = self.input_ids.shape[1], self.input_ids.shape[2]

    def lookup(self, items: torch.Tensor, lang: torch.Tensor, k: torch.Tensor) -> dict[str, torch.Tensor]:
        return {key: getattr(self, key)[items, lang, k].long() for key in TOKEN_KEYS}

    def sample(
        self, items: torch.Tensor, *, dropout: float, generator: torch.Generator | None = None,
        language_weights: tuple[float, ...] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Tokens of a random caption in a random language of each item; with probability ``dropout`` of "".

        ``language_weights`` (one per language of ``LANGUAGES``) skews the language draw; default: uniform.
        A pool with twins adds ``"contrast"``: ``rows``, the items whose caption (kept, not dropped) has a
        twin that differs from it, and the twins' tokens of those rows. A pool with token objects adds
        ``"token_objects"``: each row's (all zeros for a dropped caption).
        """
        b = items.shape[0]
        dev = items.device
        gdev = generator.device if generator is not None else dev
        if language_weights is None:
            lang = torch.randint(0, self.n_languages, (b,), generator=generator, device=gdev).to(dev)
        else:
            probs = torch.tensor(language_weights, dtype=torch.float, device=gdev)
            lang = torch.multinomial(probs, b, replacement=True, generator=generator).to(dev)
        k = torch.randint(0, self.per_language, (b,), generator=generator, device=gdev).to(dev)
        out = self.lookup(items, lang, k)
        drop = (torch.rand((b,), generator=generator, device=gdev) < dropout).to(dev)[:, None]
        out = {key: torch.where(drop, self.empty[key].expand_as(v), v) for key, v in out.items()}
        if self.twins is not None:
            twin = {key: t[items, lang, k].long() for key, t in zip(TOKEN_KEYS, self.twins)}
            rows = torch.nonzero(~drop[:, 0] & (twin["input_ids"] != out["input_ids"]).any(dim=1)).flatten()
            out["contrast"] = {"rows": rows, **{key: v[rows] for key, v in twin.items()}}
        if self.token_objects is not None:
            out["token_objects"] = torch.where(drop, 0, self.token_objects[items, lang, k])
        return out
