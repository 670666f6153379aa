"""Fixtures for the server tests: one live server per test module (built-in model, default settings)."""

from __future__ import annotations

import httpx
import pytest

from helpers.server_process import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server per test module: built-in model, default settings."""
    srv = Server(tmp_path_factory.mktemp("serve") / "data")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c
