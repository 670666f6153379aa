"""Captioned image folders for `kolors train`: captions, aspect-ratio buckets, and a step-addressed batch order.

Layouts: a Hugging Face image folder (``metadata.jsonl`` with ``file_name`` and ``text``), or images with a
``.txt`` caption of the same name beside each. For ControlNet training every ``metadata.jsonl`` row also names its
control image in a ``conditioning_image`` column (diffusers' ControlNet training layout). The batch of every
micro-step is a pure function of the seed and the step number, so a resumed run sees exactly the batches an
uninterrupted one would.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import KolorsError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CAPTION_KEYS = ("text", "caption", "prompt")
CONDITIONING_KEY = "conditioning_image"


class DatasetError(KolorsError):
    """The training data is missing, unreadable or inconsistent (the message names the file)."""


@dataclass(frozen=True)
class Example:
    """One training image and its caption (and, for ControlNet training, its control image)."""

    path: Path
    caption: str
    control: Path | None = None


def read_examples(folder: str | Path, caption: str | None = None, *, conditioning: bool = False) -> list[Example]:
    """The images of ``folder`` with their captions (``caption``, when given, replaces every caption).

    ``conditioning``: every example needs a control image (the ``conditioning_image`` column of metadata.jsonl).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"training data folder not found: {folder}")
    metadata = folder / "metadata.jsonl"
    if conditioning and not metadata.is_file():
        raise DatasetError(f"ControlNet training needs {metadata}: one {{\"file_name\", \"text\", "
                           f"\"{CONDITIONING_KEY}\"}} row per image")
    examples = (_from_metadata(metadata, caption, conditioning) if metadata.is_file()
                else _from_text_files(folder, caption))
    if not examples:
        raise DatasetError(f"no images found in {folder} (expected {', '.join(IMAGE_SUFFIXES)} files)")
    return examples


def _from_metadata(metadata: Path, caption: str | None, conditioning: bool = False) -> list[Example]:
    """Examples listed in a Hugging Face image folder's ``metadata.jsonl``."""
    examples = []
    for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{metadata} line {number} is not valid JSON: {exc.msg}") from None
        name = row.get("file_name") if isinstance(row, dict) else None
        text = next((row[k] for k in CAPTION_KEYS if isinstance(row.get(k), str)), None) if name else None
        if not isinstance(name, str) or (text is None and caption is None):
            raise DatasetError(f"{metadata} line {number} needs a 'file_name' and a 'text' (caption) field")
        path = metadata.parent / name
        if not path.is_file():
            raise DatasetError(f"{metadata} line {number}: image not found: {path}")
        control = None
        if conditioning:
            value = row.get(CONDITIONING_KEY)
            if not isinstance(value, str) or not value:
                raise DatasetError(f"{metadata} line {number} has no '{CONDITIONING_KEY}' (the file name of its "
                                   "control image), which ControlNet training needs")
            control = metadata.parent / value
            if not control.is_file():
                raise DatasetError(f"{metadata} line {number}: conditioning image not found: {control}")
        examples.append(Example(path, caption if caption is not None else text, control))
    return examples


def _from_text_files(folder: Path, caption: str | None) -> list[Example]:
    """Images under ``folder`` (recursively), each captioned by the ``.txt`` file beside it."""
    examples = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        if caption is not None:
            examples.append(Example(path, caption))
            continue
        text_file = path.with_suffix(".txt")
        if not text_file.is_file():
            raise DatasetError(f"no caption for {path}: add {text_file.name} beside it or a metadata.jsonl")
        examples.append(Example(path, text_file.read_text(encoding="utf-8").strip()))
    return examples


def open_image(path: Path) -> Image.Image:
    """The image at ``path`` as RGB, or a DatasetError naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of the image at ``path`` from its header, or a DatasetError naming the file."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None
    return height, width


def bucket_sizes(resolution: int, multiple: int, max_ratio: float = 2.0) -> list[tuple[int, int]]:
    """(height, width) pairs of about ``resolution``² pixels, sides multiples of ``multiple``, ratio ≤ max_ratio."""
    area = resolution * resolution
    step = max(multiple, (resolution // 16) // multiple * multiple)
    sizes = set()
    width = step
    while width <= resolution * math.sqrt(max_ratio):
        height = max(step, int(area / width) // step * step)
        if max(height, width) / min(height, width) <= max_ratio + 1e-9:
            sizes.add((height, width))
        width += step
    sizes.add((resolution // multiple * multiple,) * 2)
    return sorted(sizes | {(w, h) for h, w in sizes})


class ImageDataset(torch.utils.data.Dataset):
    """Examples resized to cover their bucket and centre-cropped; items carry SDXL micro-conditioning.

    With ``latent_files`` set (one ``.safetensors`` with ``mean`` and ``std`` per example), items carry the
    cached VAE distribution instead of pixels. Examples with a control image carry it as ``control``, in [0, 1],
    resized and cropped like the image (resized with Lanczos, as generation resizes control images).
    """

    def __init__(self, examples: list[Example], resolution: int, multiple: int, *, buckets: bool = True):
        self.examples = examples
        self.sizes = [image_size(e.path) for e in examples]
        choices = bucket_sizes(resolution, multiple) if buckets else [(resolution // multiple * multiple,) * 2]
        self.buckets = [_nearest(choices, size) for size in self.sizes]
        self.latent_files: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        example = self.examples[index]
        original, (height, width) = self.sizes[index], self.buckets[index]
        scale = max(height / original[0], width / original[1])
        resized = (max(width, round(original[1] * scale)), max(height, round(original[0] * scale)))  # (w, h)
        top, left = (resized[1] - height) // 2, (resized[0] - width) // 2
        item = {
            "index": index,
            "caption": example.caption,
            # SDXL micro-conditioning: original size, crop top-left, target size (height first)
            "time_ids": torch.tensor([*original, top, left, height, width], dtype=torch.float32),
        }
        if example.control is not None:
            control = open_image(example.control).resize(resized, Image.Resampling.LANCZOS)
            control = control.crop((left, top, left + width, top + height))
            item["control"] = torch.from_numpy(np.asarray(control, dtype=np.float32) / 255.0).permute(2, 0, 1)
        if self.latent_files is not None:
            from safetensors.torch import load_file

            cached = load_file(str(self.latent_files[index]))
            return {**item, "latent_mean": cached["mean"], "latent_std": cached["std"]}
        image = open_image(example.path)
        if (image.height, image.width) != original:
            raise DatasetError(f"image {example.path} changed while training")
        image = image.resize(resized, Image.Resampling.BICUBIC).crop((left, top, left + width, top + height))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
        return {**item, "pixels": pixels}


def _nearest(sizes: list[tuple[int, int]], size: tuple[int, int]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest to that of ``size`` (log scale)."""
    ratio = math.log(size[1] / size[0])
    return min(sizes, key=lambda s: (abs(math.log(s[1] / s[0]) - ratio), s))


def collate(rows: list[dict]) -> dict:
    """A batch of dataset items (all from one bucket)."""
    batch = {
        "index": torch.tensor([r["index"] for r in rows]),
        "captions": [r["caption"] for r in rows],
        "time_ids": torch.stack([r["time_ids"] for r in rows]),
    }
    for key in ("pixels", "latent_mean", "latent_std", "control"):
        if key in rows[0]:
            batch[key] = torch.stack([r[key] for r in rows])
    return batch


class BatchPlan:
    """Which examples form global micro-batch ``k``: per epoch, shuffled same-bucket groups of ``global_batch``.

    Groups are filled by wrapping around inside a bucket, so every image is seen each epoch and a bucket
    smaller than the batch still trains. Epoch ``e`` is drawn from ``(seed, e)`` only.
    """

    def __init__(self, buckets: list[tuple[int, int]], global_batch: int, seed: int):
        self.global_batch = global_batch
        self.seed = seed
        self.groups: dict[tuple[int, int], list[int]] = {}
        for index, bucket in enumerate(buckets):
            self.groups.setdefault(bucket, []).append(index)
        self.per_epoch = sum(math.ceil(len(m) / global_batch) for m in self.groups.values())
        self._epochs: dict[int, list[list[int]]] = {}

    def global_batch_at(self, k: int) -> list[int]:
        """The example indices of global micro-batch ``k`` (0-based over the whole run)."""
        epoch, position = divmod(k, self.per_epoch)
        if epoch not in self._epochs:
            self._epochs = {epoch: self._epoch(epoch)}
        return self._epochs[epoch][position]

    def _epoch(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for bucket in sorted(self.groups):
            members = [self.groups[bucket][i] for i in rng.permutation(len(self.groups[bucket]))]
            count = math.ceil(len(members) / self.global_batch)
            wrapped = (members * math.ceil(count * self.global_batch / len(members)))[: count * self.global_batch]
            batches += [wrapped[i * self.global_batch : (i + 1) * self.global_batch] for i in range(count)]
        return [batches[i] for i in rng.permutation(len(batches))]


class LocalBatches(torch.utils.data.Sampler):
    """This process's share of global micro-batches ``first`` … ``last - 1`` (for a DataLoader's batch_sampler)."""

    def __init__(self, plan: BatchPlan, first: int, last: int, rank: int, batch_size: int):
        self.plan, self.first, self.last, self.rank, self.batch_size = plan, first, last, rank, batch_size

    def __len__(self) -> int:
        return max(0, self.last - self.first)

    def __iter__(self) -> Iterator[list[int]]:
        for k in range(self.first, self.last):
            yield self.plan.global_batch_at(k)[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
