"""Fixtures of the CLI tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fails the test if the command gets as far as loading a model."""
    from kolors.pipelines.pipeline import Pipeline

    def refuse(cls, *args, **kwargs):
        pytest.fail("the model was loaded although the input could be rejected before")

    monkeypatch.setattr(Pipeline, "from_pretrained", classmethod(refuse))
