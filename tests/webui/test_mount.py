"""``mount(app)`` without a browser: the page and its files are served, with a policy that keeps the browser on
the server's origin; every file the page loads ships in the package; nothing refers to another host."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kolors.server.webui import STATIC, mount

fastapi = pytest.importorskip("fastapi", reason="the server extra is not installed (pip install -e '.[test]')")
from fastapi.testclient import TestClient  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client():
    app = fastapi.FastAPI()
    mount(app)
    return TestClient(app)


def test_page_is_served_at_the_root_with_a_same_origin_policy(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'self'" and policy["connect-src"] == "'self'"
    assert policy["script-src"] == "'self'" and policy["img-src"] == "'self' data: blob:"
    assert '<script type="module" src="ui/js/main.js">' in response.text


@pytest.mark.parametrize("path, media", [("/ui/js/main.js", "javascript"), ("/ui/app.css", "text/css"),
                                         ("/ui/i18n/zh.json", "application/json"), ("/ui/icon.svg", "image/svg+xml")])
def test_static_files_are_served(client, path, media):
    response = client.get(path)
    assert response.status_code == 200 and media in response.headers["content-type"]


def test_every_file_the_page_loads_exists():
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    wanted = {STATIC / ref.removeprefix("ui/") for ref in re.findall(r'(?:src|href)="(ui/[^"]+)"', html)}
    for script in (STATIC / "js").glob("*.js"):
        wanted.update(script.parent / ref for ref in re.findall(r'from "(\./[\w.]+)"', script.read_text()))
    assert len(wanted) > 10
    assert sorted(str(p) for p in wanted if not p.is_file()) == []


def test_nothing_refers_to_another_host():
    for path in STATIC.rglob("*"):
        if path.suffix in (".html", ".js", ".css", ".json", ".svg"):
            text = path.read_text(encoding="utf-8").replace("http://www.w3.org/2000/svg", "")
            assert not re.search(r"https?:|//[\w-]+\.[\w.-]+/|@import", text), path.name


def test_static_files_are_package_data():
    package_data = (ROOT / "pyproject.toml").read_text(encoding="utf-8").split("[tool.setuptools.package-data]")[1]
    assert '"server/webui/static/**/*"' in package_data.split("[")[1]
