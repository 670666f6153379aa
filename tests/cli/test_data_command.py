"""`kolors data shapes`: an imagefolder with bilingual captions, written whole or not at all."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from kolors.cli.main import main
from kolors.evaluation.shapes_checker import check
from kolors.signals import Terminated


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


@pytest.mark.parametrize("extra, message", [
    (["--size", "100000"], "argument --size: must be between 8 and 4096 pixels, got 100000"),
    (["--size", "0"], "argument --size: must be a positive integer, got 0"),
    (["--seed", "-1"], "argument --seed: must be 0 or more, got -1"),
    (["--seed", "x"], "argument --seed: expected a whole number, got 'x'"),
    (["-n", "0"], "argument --num/-n: must be a positive integer, got 0"),
])
def test_bad_values_are_one_line_and_create_nothing(tmp_path, capsys, extra, message):
    assert main(["data", "shapes", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kolors: error: ") and len(err.splitlines()) == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("make, target, message", [
    (lambda t: (t / "file").write_text("x"), "file", "file is a file: choose a new folder"),
    (lambda t: (t / "file").write_text("x"), "file/sub", "cannot create"),
    (lambda t: None, "/proc/kolors-shapes-test", "/proc/kolors-shapes-test"),
])
def test_an_unusable_folder_is_one_line_and_creates_nothing(tmp_path, capsys, monkeypatch, make, target, message):
    make(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["data", "shapes", target, "-n", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kolors: error: ") and len(err.splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), Terminated(), OSError(28, "No space left on device")])
def test_a_failure_midway_removes_the_partial_dataset_and_only_it(tmp_path, capsys, monkeypatch, failure):
    import kolors.data.examples as examples

    (tmp_path / "shapes.writing").mkdir()  # somebody's folder with the name an older version used
    (tmp_path / "shapes.writing" / "theirs.txt").write_text("keep")
    real = examples.render
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise failure
        return real(*args, **kwargs)

    monkeypatch.setattr(examples, "render", failing)
    code = main(["data", "shapes", str(tmp_path / "shapes"), "-n", "20", "--size", "32"])
    err = capsys.readouterr().err
    assert code == {KeyboardInterrupt: 130, Terminated: 143, OSError: 2}[type(failure)], err
    assert len(err.splitlines()) == 1, err
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["shapes.writing",
                                                                                 "shapes.writing/theirs.txt"]
