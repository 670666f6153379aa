"""Which words of a prompt a model trained by this recipe never saw in its training captions.

The recipe writes ``vocabulary.json`` into the model folder: every English word (lower case), number and Han
character of the captions it trained on. :func:`unknown_words` reads it (no torch, no tokenizer: a JSON file and a
regular expression), so the CLI can say once, before generating, which words the built-in model will not follow
instead of silently drawing something else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["VOCABULARY_FILE", "prompt_words", "build_vocabulary", "write_vocabulary", "unknown_words"]

VOCABULARY_FILE = "vocabulary.json"
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# Han characters one by one; other words as runs of letters and digits, with inner hyphens or apostrophes.
_TOKEN = re.compile(rf"[{_HAN}]|[^\W_{_HAN}]+(?:[-'][^\W_{_HAN}]+)*")


def prompt_words(text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) of each word of ``text``: Han characters singly, other words lower-cased."""
    return [(m.group().lower(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def build_vocabulary(captions: Iterable[str]) -> dict[str, list[str]]:
    """``{"words": [...], "characters": [...]}``: the non-Han words and the Han characters of ``captions``."""
    words, chars = set(), set()
    for caption in captions:
        for word, _, _ in prompt_words(caption):
            (chars if _is_han(word) else words).add(word)
    return {"words": sorted(words), "characters": sorted(chars)}


def write_vocabulary(folder: str | Path, captions: Iterable[str]) -> Path:
    """Write ``folder/vocabulary.json`` from the training ``captions``; returns its path."""
    path = Path(folder) / VOCABULARY_FILE
    path.write_text(json.dumps(build_vocabulary(captions), ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    return path


def unknown_words(prompt: str, model_folder: str | Path) -> list[str]:
    """The words of ``prompt`` that never occur in the training captions of the model in ``model_folder``.

    In prompt order, each once: English (any non-Han) words lower-cased, numbers as written, and runs of adjacent
    unknown Han characters as one word ("宇航员"). Empty when the folder has no ``vocabulary.json`` (a model this
    recipe did not train: nothing is known about its training captions) or when every word is known.
    """
    path = Path(model_folder) / VOCABULARY_FILE
    if not path.is_file():
        return []
    vocab = json.loads(path.read_text(encoding="utf-8"))
    known = set(vocab.get("words", [])) | set(vocab.get("characters", []))
    out: list[str] = []
    han_end = None  # where the last unknown Han character ended: the next one extends its run when adjacent
    for word, start, end in prompt_words(prompt):
        if word in known:
            continue
        if _is_han(word) and start == han_end:
            out[-1] += word
        else:
            out.append(word)
        han_end = end if _is_han(word) else None
    return _dedupe(out)


def _dedupe(words: list[str]) -> list[str]:
    seen: set[str] = set()
    return [w for w in words if not (w in seen or seen.add(w))]


def _is_han(word: str) -> bool:
    return len(word) == 1 and re.match(f"[{_HAN}]", word) is not None
