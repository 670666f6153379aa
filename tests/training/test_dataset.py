"""Captioned image folders, aspect buckets, unreadable images, and the step-addressed batch order."""

from __future__ import annotations

import pytest

from helpers.shape_images import write_shapes
from kolors.training.dataset import (
    BatchPlan,
    DatasetError,
    ImageDataset,
    LocalBatches,
    bucket_sizes,
    collate,
    read_examples,
)


def test_both_layouts_bilingual(shapes_metadata, shapes_txt):
    meta, txt = read_examples(shapes_metadata), read_examples(shapes_txt)
    assert len(meta) == 12 and len(txt) == 8
    for examples in (meta, txt):
        captions = [e.caption for e in examples]
        assert "a red circle" in captions and "一个蓝色的圆形" in captions
    assert {e.caption for e in read_examples(shapes_txt, "sks")} == {"sks"}


def test_buckets_and_micro_conditioning(shapes_metadata):
    dataset = ImageDataset(read_examples(shapes_metadata), 16, 4)
    assert set(dataset.buckets) == {(16, 16), (12, 20), (20, 12)}
    item = dataset[2]  # a 20x12 (w x h) image: the landscape bucket
    assert item["pixels"].shape == (3, 12, 20) and -1 <= item["pixels"].min() < item["pixels"].max() <= 1
    assert item["time_ids"].tolist() == [12, 20, 0, 0, 12, 20]
    batch = collate([dataset[1], dataset[5]])  # 24x24 and 24x24 -> 16x16
    assert batch["pixels"].shape == (2, 3, 16, 16) and batch["time_ids"][0].tolist() == [24, 24, 0, 0, 16, 16]
    assert (1024, 1024) in bucket_sizes(1024, 32) and (768, 1344) in bucket_sizes(1024, 32)


def test_unreadable_image_names_file(tmp_path):
    folder = write_shapes(tmp_path / "data", 4, "txt")
    (folder / "001.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match=r"cannot read image .*001\.png"):
        ImageDataset(read_examples(folder), 16, 4)


def test_missing_caption_and_bad_metadata(tmp_path):
    folder = write_shapes(tmp_path / "txt", 3, "txt")
    (folder / "002.txt").unlink()
    with pytest.raises(DatasetError, match=r"no caption for .*002\.png"):
        read_examples(folder)
    meta = write_shapes(tmp_path / "meta", 3, "metadata")
    (meta / "metadata.jsonl").write_text('{"file_name": "000.png", "text": "a"}\n{"file_name": "missing.png", '
                                         '"text": "b"}\n')
    with pytest.raises(DatasetError, match=r"metadata.jsonl line 2: image not found: .*missing\.png"):
        read_examples(meta)


def test_batch_order_is_a_function_of_seed_and_step():
    buckets = [(16, 16)] * 7 + [(12, 20)] * 3
    plan, again = BatchPlan(buckets, 4, seed=3), BatchPlan(buckets, 4, seed=3)
    batches = [plan.global_batch_at(k) for k in range(3 * plan.per_epoch)]
    assert batches == [again.global_batch_at(k) for k in range(3 * plan.per_epoch)]
    assert again.global_batch_at(7) == batches[7]  # random access, as a resumed run does
    epoch = [i for b in batches[: plan.per_epoch] for i in b]
    assert set(epoch) == set(range(10))  # every image each epoch
    assert all(len({buckets[i] for i in b}) == 1 for b in batches)  # one bucket per batch
    assert batches[: plan.per_epoch] != batches[plan.per_epoch : 2 * plan.per_epoch]
    # two processes with 2 rows each see exactly the rows of the 1-process global batch
    ranks = [list(LocalBatches(plan, 0, 5, r, 2)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == batches[:5]
