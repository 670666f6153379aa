"""The evaluation driver: a pipeline that draws each prompt's own scene scores ~100%, the report says so, and images
saved by one run score the same when read back (``--rescore``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from kolors.data import shapes as S
from kolors.evaluation import shapes_eval as E
from kolors.evaluation.split_prompts import SPLIT_CATEGORIES, SPLIT_PAIRS, build_split_prompts


@dataclass
class SceneDrawer:
    """Stands in for a pipeline: draws the scene that a prompt row was written from (perfect obedience)."""

    scenes: dict[str, dict]
    defaults = SimpleNamespace(steps=25, guidance=5.0)

    def __call__(self, prompt, *, seed, num_images, **_):
        image = S.render(S.Scene.from_dict(self.scenes[prompt]), 128)
        return SimpleNamespace(seeds=list(range(seed, seed + num_images)), images=[image] * num_images)


@pytest.fixture(scope="module")
def rows():
    return E.prompt_rows("composition", pairs=3)


def test_perfect_images_score_everywhere_and_read_back_the_same(rows, tmp_path):
    drawer = SceneDrawer({r["prompt"]: r["scene"] for r in rows})
    report = E.evaluate_pipeline(drawer, rows, seeds=2, images=tmp_path)
    assert len(list(tmp_path.glob("*.png"))) == 2 * len(rows)
    rates = {(m, lang): v["rate"] for m, by_lang in report["metrics"].items() for lang, v in by_lang.items()}
    assert set(lang for _, lang in rates) == {"en", "zh"}
    assert min(rates.values()) >= 0.8, rates
    again = E.evaluate_pipeline(None, rows, seeds=2, images=tmp_path)
    assert again["metrics"] == report["metrics"]
    table = E.format_report(report)
    assert "background" in table and "images saved before" in E.format_report(again)


def test_rescore_of_a_folder_without_the_images_is_a_one_line_error(tmp_path, capsys):
    assert E.main(["--rescore", str(tmp_path), "--pairs", "1", "--reference", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m kolors.evaluation.shapes_eval: error: no image ") and "--images folder" in err and err.count("\n") == 1


def test_the_v1_reference_reports_cover_every_metric():
    for name, path in E.REFERENCES.items():
        report = json.loads(path.read_text(encoding="utf-8"))
        assert report["settings"]["seeds"] == 2, name
        assert {"en", "zh"} <= set(next(iter(report["metrics"].values()))), name


def test_an_unwritable_json_report_is_refused_before_the_model_loads(tmp_path, capsys):
    from kolors.evaluation import control_eval

    for command in (E.main, control_eval.main):
        with pytest.raises(SystemExit) as exc:
            command(["--json", str(tmp_path / "missing" / "report.json")])
        assert exc.value.code == 2
        assert "the folder" in capsys.readouterr().err.splitlines()[-1]
        with pytest.raises(SystemExit):
            command(["--json", str(tmp_path)])
        assert "is a folder" in capsys.readouterr().err.splitlines()[-1]


def test_a_rescored_folder_writes_a_complete_json_report(rows, tmp_path, capsys):
    images = tmp_path / "images"
    E.evaluate_pipeline(SceneDrawer({r["prompt"]: r["scene"] for r in rows}), rows, seeds=2, images=images)
    out = tmp_path / "report.json"
    assert E.main(["--rescore", str(images), "--pairs", "3", "--reference", "none", "--json", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["prompts"] == "composition" and "records" not in report
    assert min(v["rate"] for by_lang in report["metrics"].values() for v in by_lang.values()) >= 0.8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "report.json"]  # no temporary left beside it


def test_pair_split_prompts_come_from_the_side_of_the_split_they_name():
    rows = E.prompt_rows("pair-splits")
    assert rows == build_split_prompts()  # built from a seed: the same every time
    by_category = {c: [r for r in rows if r["category"] == c] for c in SPLIT_CATEGORIES}
    for category, (scenes_from, words_from) in SPLIT_CATEGORIES.items():
        got = by_category[category]
        assert len(got) == 2 * SPLIT_PAIRS and {r["lang"] for r in got} == {"en", "zh"}
        for r in got:
            a, b = (tuple(o) for o in r["expects"]["objects"])
            assert S.is_heldout_pair(a, b) == (scenes_from == "heldout"), (category, r["prompt"])
            assert r["template"].split("/")[1] == words_from, (category, r["template"])
            assert a[0] != b[0] and r["expects"]["relation"]
    # The wordings differ from train's, the scenes do not: a gap between them is the wording's alone.
    assert [r["scene"] for r in by_category["wordings"]] == [r["scene"] for r in by_category["train"]]
    assert [r["scene"] for r in by_category["heldout"]] == [r["scene"] for r in by_category["combos"]]
    assert all(x["prompt"] != y["prompt"] for x, y in zip(by_category["wordings"], by_category["train"]))


def test_perfect_images_bind_in_every_pair_split(tmp_path):
    rows = E.prompt_rows("pair-splits", pairs=4, categories=["combos"])
    assert {r["category"] for r in rows} == {"combos"} and len(rows) == 8
    report = E.evaluate_pipeline(SceneDrawer({r["prompt"]: r["scene"] for r in rows}), rows, seeds=1)
    assert {lang: v["rate"] for lang, v in report["metrics"]["binding"].items()} == {"en": 1.0, "zh": 1.0}


@pytest.mark.parametrize("categories", [[], ["train", "combos"]])
def test_pair_splits_without_one_category_is_a_usage_error(categories, capsys):
    argv = ["--prompts", "pair-splits", "--rescore", "nowhere"] + [a for c in categories for a in ("--category", c)]
    with pytest.raises(SystemExit) as exc:
        E.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("python -m kolors.evaluation.shapes_eval: error: argument --category: --prompts pair-splits "
                          "takes one: train, wordings, combos or heldout")
