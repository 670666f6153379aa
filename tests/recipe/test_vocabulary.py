"""Which words of a prompt the built-in model never saw in its training captions (torch-free, from vocabulary.json)."""

from __future__ import annotations

import subprocess
import sys

from kolors.recipe.vocabulary import build_vocabulary, unknown_words, write_vocabulary


def test_unknown_words_are_the_prompt_words_training_never_used(tmp_path):
    write_vocabulary(tmp_path, ["a red circle on the left", "一个红色的圆形在左边", "two blue squares"])
    assert unknown_words("A RED Circle", tmp_path) == []
    assert unknown_words("a cyan circle", tmp_path) == ["cyan"]
    assert unknown_words("一个青色的圆形", tmp_path) == ["青"]
    # adjacent unknown Han characters are one word; repeated words are named once; numbers are words
    assert unknown_words("an astronaut riding a horse, 宇航员骑马, astronaut", tmp_path) == [
        "an", "astronaut", "riding", "horse", "宇航员骑马"]
    assert unknown_words("2 blue squares, 宇航员的宇航员", tmp_path) == ["2", "宇航员"]
    assert build_vocabulary(["Medium-sized disk's 大圆"]) == {"words": ["disk's", "medium-sized"],
                                                           "characters": ["圆", "大"]}


def test_a_folder_without_a_vocabulary_knows_nothing_to_complain_about(tmp_path):
    assert unknown_words("anything at all, 随便", tmp_path) == []


def test_it_imports_without_torch():
    code = ("import sys; from kolors.recipe.vocabulary import unknown_words; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
