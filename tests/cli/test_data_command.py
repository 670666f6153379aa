"""`kolors data shapes`: an imagefolder with bilingual captions, written whole or not at all."""

from __future__ import annotations

import json

from PIL import Image

from kolors.cli.main import main
from kolors.evaluation.shapes_checker import check


def test_writes_an_imagefolder_whose_captions_match_the_images(tmp_path):
    out = tmp_path / "shapes"
    assert main(["data", "shapes", str(out), "-n", "6", "--size", "64", "--seed", "1", "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 6
    for row in rows:
        image = Image.open(out / row["file_name"])
        assert image.size == (64, 64)
        assert row["text"] == row["text_" + row["lang"]]
        assert any("\u4e00" <= ch <= "\u9fff" for ch in row["text_zh"]) and row["text_en"].isascii()
        assert all(check(image, json.loads(row["scene"])))
    assert not (tmp_path / "shapes.writing").exists()


def test_refuses_a_folder_that_has_files(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["data", "shapes", str(tmp_path), "-n", "2"]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_control_canny_writes_the_edges_generation_would_make(tmp_path):
    from kolors.annotators.maps import control_map

    out = tmp_path / "pairs"
    assert main(["data", "shapes", str(out), "-n", "4", "--seed", "2", "--control", "canny", "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    plain = tmp_path / "plain"
    assert main(["data", "shapes", str(plain), "-n", "4", "--seed", "2", "--quiet"]) == 0
    assert [r["text"] for r in rows] == [json.loads(line)["text"] for line in
                                         (plain / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    for row in rows:
        image = Image.open(out / row["file_name"])
        edges = Image.open(out / row["conditioning_image"])
        assert row["conditioning_image"].startswith("conditioning/")
        assert list(edges.getdata()) == list(control_map("canny", image).getdata())
        assert 0 < sum(v[0] > 0 for v in edges.getdata()) < 0.2 * 128 * 128  # outlines, not filled shapes
