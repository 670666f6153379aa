"""The two message catalogues: the same keys and placeholders, every key the page uses exists, no key unused, and
no interface text written into the markup or the scripts instead of the catalogues."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from kolors.server.webui import STATIC

CATALOGUES = {lang: json.loads((STATIC / "i18n" / f"{lang}.json").read_text(encoding="utf-8")) for lang in ("en", "zh")}
SCRIPTS = {p.name: p.read_text(encoding="utf-8") for p in (STATIC / "js").glob("*.js")}
HTML = (STATIC / "index.html").read_text(encoding="utf-8")
# Keys built at run time from a prefix and a server-given name (task, scheduler, mode, control type, job status,
# parameter name, token state, parameter source).
DYNAMIC_PREFIXES = ("task.", "scheduler.", "mode.", "control.", "status.", "param.", "tokens.", "params.source.")
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def keys_in_markup() -> set[str]:
    keys = set(re.findall(r'data-i18n="([^"]+)"', HTML))
    for spec in re.findall(r'data-i18n-attr="([^"]+)"', HTML):
        keys.update(pair.split("=")[1] for pair in spec.split(";"))
    return keys


def keys_in_scripts() -> set[str]:
    """String literals of the scripts shaped like message keys (``"group.name"``; file names left out)."""
    literals = set()
    for text in SCRIPTS.values():
        literals.update(re.findall(r'"([a-z_]+\.[a-z_][\w.-]*)"', text))
    return {k for k in literals if not re.search(r"\.(js|json|png|svg|css)$", k)}


def test_both_catalogues_have_the_same_keys():
    en, zh = CATALOGUES["en"], CATALOGUES["zh"]
    assert sorted(set(en) - set(zh)) == [], "keys missing from zh.json"
    assert sorted(set(zh) - set(en)) == [], "keys missing from en.json"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_messages_are_non_empty_text(lang):
    bad = [k for k, v in CATALOGUES[lang].items() if not isinstance(v, str) or not v.strip()]
    assert bad == []


def test_placeholders_match_between_languages():
    differ = {k: (v, CATALOGUES["zh"][k]) for k, v in CATALOGUES["en"].items()
              if set(PLACEHOLDER.findall(v)) != set(PLACEHOLDER.findall(CATALOGUES["zh"][k]))}
    assert differ == {}


def test_chinese_catalogue_is_translated():
    """Messages identical in both languages must be names (Kolors, LoRA, DDIM...) or numbers, not English prose."""
    same = {k: v for k, v in CATALOGUES["en"].items() if CATALOGUES["zh"][k] == v}
    prose = {k: v for k, v in same.items() if len(re.findall(r"\b[a-z]{3,}\b", PLACEHOLDER.sub("", v))) > 1}
    assert prose == {}, "English sentences left in zh.json"


def test_every_key_used_by_the_page_exists():
    used = keys_in_markup() | keys_in_scripts()
    assert len(used) > 100  # the scan itself works
    assert sorted(used - set(CATALOGUES["en"])) == []


def test_every_message_is_used():
    used = keys_in_markup() | keys_in_scripts()
    unused = [k for k in CATALOGUES["en"] if k not in used and not k.startswith(DYNAMIC_PREFIXES)]
    assert unused == []


class _TextCollector(HTMLParser):
    """Text in the markup outside translated elements, <script>, <style> and data (data-content) elements."""

    VOID = {"input", "img", "br", "meta", "link", "source", "hr", "col", "area", "base", "wbr", "path", "circle",
            "rect"}

    def __init__(self):
        super().__init__()
        self.stack: list[bool] = []  # per open element: is its text exempt
        self.loose: list[str] = []
        self.attributes: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        translated_attrs = {pair.split("=")[0] for pair in (attrs.get("data-i18n-attr") or "").split(";") if pair}
        for name in ("placeholder", "title", "aria-label", "alt"):
            if attrs.get(name) and name not in translated_attrs:
                self.attributes.append(f"<{tag} {name}={attrs[name]!r}>")
        if tag in self.VOID:
            return
        exempt = (bool(self.stack and self.stack[-1]) or "data-i18n" in attrs or "data-content" in attrs
                  or tag in ("script", "style", "svg"))
        self.stack.append(exempt)

    def handle_endtag(self, tag):
        if tag not in self.VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if data.strip() and not (self.stack and self.stack[-1]) and re.search(r"[^\W\d_]", data):
            self.loose.append(data.strip())


def test_markup_has_no_text_outside_the_catalogues():
    collector = _TextCollector()
    collector.feed(HTML)
    assert collector.loose == []
    assert collector.attributes == []


def test_markup_default_text_is_the_english_catalogue():
    """The text written in index.html (seen before the scripts run) is the English message of its key."""
    wrong = [(key, text) for key, text in re.findall(r'data-i18n="([^"]+)"[^>]*>([^<]*)<', HTML)
             if text.strip() and text.strip() != CATALOGUES["en"].get(key)]
    assert wrong == []
