"""The built-in model: found with no --model, and it draws what it is asked, in Chinese and in English: colour and
shape, the background, where the shape goes, how many."""

from __future__ import annotations

import json

import pytest

from kolors import load_pipeline
from kolors.evaluation.composition import score
from kolors.evaluation.shapes_checker import check_image
from kolors.loading import EMBEDDED_MODEL_DIR
from kolors.recipe.vocabulary import VOCABULARY_FILE, unknown_words

# (English, Chinese, colour, shape): wordings of the training style; the held-out sets are the evaluation's job.
PROMPTS = [
    ("a red circle", "一个红色的圆形", "red", "circle"),
    ("a green square", "一个绿色的正方形", "green", "square"),
    ("a purple triangle", "一个紫色的三角形", "purple", "triangle"),
    ("an orange circle", "一个橙色的圆形", "orange", "circle"),
]
# (English, Chinese, what the checker must find): one prompt per composition category the model has learned.
COMPOSITION = {
    "background": ("a red circle on a white background", "白色背景上的红色圆形",
                   {"colour": "red", "shape": "circle", "background": "white"}),
    "position": ("a blue square in the top left corner", "左上角有一个蓝色的正方形",
                 {"colour": "blue", "shape": "square", "position": "top-left"}),
    "position on the right": ("a green circle on the right", "一个绿色的圆形位于画面右侧",
                              {"colour": "green", "shape": "circle", "position": "right"}),
    "count": ("two green triangles", "两个绿色的三角形", {"count": 2}),
}
SEEDS = 2
# Images (of 2 × SEEDS per category) that may miss, from the model's held-out rates (its README): a small model.
MISSES = {"background": 0, "position": 0, "position on the right": 0, "count": 1}


@pytest.fixture(scope="module")
def pipe(monkeypatch_module):
    monkeypatch_module.delenv("KOLORS_MODEL", raising=False)
    return load_pipeline(device="cpu")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_is_found_without_a_model_argument_and_declares_its_defaults(pipe):
    assert pipe.is_builtin
    declared = json.loads((EMBEDDED_MODEL_DIR / "kolors_defaults.json").read_text())
    assert (pipe.defaults.width, pipe.defaults.height) == (declared["width"], declared["height"]) == (128, 128)
    assert (pipe.defaults.steps, pipe.defaults.guidance) == (declared["steps"], declared["guidance"])
    size = sum(p.stat().st_size for p in EMBEDDED_MODEL_DIR.rglob("*") if p.is_file())
    assert size <= 25_000_000


@pytest.fixture(scope="module")
def detections(pipe):
    """(language, expected colour, expected shape, detection) for each prompt, language and seed 0..1."""
    out = []
    for en, zh, colour, shape in PROMPTS:
        for lang, prompt in (("en", en), ("zh", zh)):
            for image in pipe(prompt, seed=0, num_images=SEEDS, progress=False).images:
                out.append((lang, colour, shape, check_image(image)))
    return out


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_draws_the_asked_colour(detections, lang):
    mine = [(c, d.colour) for lg, c, _, d in detections if lg == lang]
    right = sum(c == got for c, got in mine)
    assert right >= len(mine) - 1, mine


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_draws_the_asked_shape(detections, lang):
    mine = [(s, d.shape) for lg, _, s, d in detections if lg == lang]
    right = sum(s == got for s, got in mine)
    assert right >= len(mine) - 1, mine


def test_a_chinese_prompt_and_its_translation_agree_on_colour(detections):
    en = [d.colour for lg, _, _, d in detections if lg == "en"]
    zh = [d.colour for lg, _, _, d in detections if lg == "zh"]
    assert sum(a == b for a, b in zip(en, zh)) >= len(en) - 1, list(zip(en, zh))


@pytest.mark.parametrize("category", list(COMPOSITION))
def test_follows_the_composition_the_prompt_asks_for(pipe, category):
    """Background, position and count, in both languages, seeds 0 and 1: every metric the prompt asks for (with
    `single`: a prompt for one object draws one shape)."""
    en, zh, expects = COMPOSITION[category]
    results = {}
    for lang, prompt in (("en", en), ("zh", zh)):
        results[lang] = [score(image, expects) for image in pipe(prompt, seed=0, num_images=SEEDS,
                                                                  progress=False).images]
    right = sum(all(r.values()) for rows in results.values() for r in rows)
    assert right >= 2 * SEEDS - MISSES[category], results


@pytest.fixture(scope="module")
def readme_images(pipe):
    """The README's first command (一个红色的圆形，白色背景), seeds 0 … SEEDS-1."""
    return pipe("一个红色的圆形，白色背景", seed=0, num_images=SEEDS, progress=False).images


def test_the_first_readme_command_gets_a_red_circle_on_white(readme_images):
    """The first model drew a black background for seed 0."""
    images = readme_images
    expects = {"colour": "red", "shape": "circle", "background": "white"}
    assert all(all(score(image, expects).values()) for image in images), [score(im, expects) for im in images]


def test_the_first_readme_command_draws_one_circle(readme_images):
    """v2 drew a second circle in 7 of 16 seeds (seed 0 among them: docs/evaluation.md, 'One object, one shape')."""
    assert all(score(image, {"colour": "red", "shape": "circle"})["single"] for image in readme_images)


def test_its_vocabulary_holds_every_word_it_was_taught_and_no_other():
    assert (EMBEDDED_MODEL_DIR / VOCABULARY_FILE).is_file()
    for en, zh, _ in COMPOSITION.values():
        assert unknown_words(en, EMBEDDED_MODEL_DIR) == unknown_words(zh, EMBEDDED_MODEL_DIR) == [], (en, zh)
    assert unknown_words("三个橙色的圆形，米色背景；a pink square in the bottom right corner", EMBEDDED_MODEL_DIR) == []
    assert unknown_words("a cyan hexagon", EMBEDDED_MODEL_DIR) == ["cyan", "hexagon"]
    assert unknown_words("一个青色的六边形", EMBEDDED_MODEL_DIR) == ["青", "六"]


def test_a_prompt_nothing_like_the_training_data_still_gives_an_image(pipe):
    result = pipe("an astronaut riding a horse, 宇航员骑马", seed=3, progress=False)
    assert result.images[0].size == (128, 128)
    assert result.images[0].getextrema() != ((0, 0), (0, 0), (0, 0))
