"""Tiny captioned image folders for training tests: solid shapes, English and Chinese captions, both layouts."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": ("红色", (220, 30, 30)), "blue": ("蓝色", (30, 60, 220)), "yellow": ("黄色", (230, 210, 20)),
           "green": ("绿色", (30, 180, 60))}
SHAPES = {"circle": "圆形", "square": "正方形"}
SIZES = [(16, 16), (24, 24), (20, 12), (12, 20)]  # (width, height): two aspect buckets besides the square


def write_shapes(folder: Path, count: int = 12, layout: str = "metadata") -> Path:
    """``count`` solid-shape images with English and Chinese captions: ``metadata.jsonl`` or ``.txt`` files."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        colour = list(COLOURS)[i % len(COLOURS)]
        shape = list(SHAPES)[(i // len(COLOURS)) % len(SHAPES)]
        width, height = SIZES[i % len(SIZES)]
        image = Image.new("RGB", (width, height), (255, 255, 255))
        box = (width // 4, height // 4, 3 * width // 4, 3 * height // 4)
        draw = ImageDraw.Draw(image)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour][1])
        zh = f"一个{COLOURS[colour][0]}的{SHAPES[shape]}"
        caption = zh if i % 2 else f"a {colour} {shape}"
        name = f"{i:03d}.png"
        image.save(folder / name)
        if layout == "metadata":
            rows.append({"file_name": name, "text": caption})
        else:
            (folder / name).with_suffix(".txt").write_text(caption, encoding="utf-8")
    if rows:
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                               encoding="utf-8")
    return folder
