"""Fixtures for `kolors train` tests: a tiny model and tiny captioned image folders in both layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.shape_images import write_shapes
from helpers.tiny_kolors import write_tiny_kolors


@pytest.fixture(scope="session")
def train_model(tmp_path_factory) -> Path:
    """A tiny Kolors-diffusers folder with fp32 weights."""
    return write_tiny_kolors(tmp_path_factory.mktemp("train_model"), "diffusers", seed=0, fp16_variant=False)


@pytest.fixture(scope="session")
def shapes_metadata(tmp_path_factory) -> Path:
    return write_shapes(tmp_path_factory.mktemp("shapes") / "metadata", 12, "metadata")


@pytest.fixture(scope="session")
def shapes_txt(tmp_path_factory) -> Path:
    return write_shapes(tmp_path_factory.mktemp("shapes") / "txt", 8, "txt")


@pytest.fixture(scope="session")
def shapes_control(tmp_path_factory) -> Path:
    """The metadata layout plus a canny map of each image, named in a ``conditioning_image`` column."""
    import json

    from PIL import Image

    from kolors.annotators.maps import canny

    folder = write_shapes(tmp_path_factory.mktemp("shapes") / "control", 12, "metadata")
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    (folder / "conditioning").mkdir()
    for row in rows:
        row["conditioning_image"] = f"conditioning/{row['file_name']}"
        canny(Image.open(folder / row["file_name"])).save(folder / row["conditioning_image"])
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                           encoding="utf-8")
    return folder
