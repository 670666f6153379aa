"""Checkpoint folders: only complete ones count, the newest is found, old ones are pruned."""

from __future__ import annotations

import json

import pytest

from kolors import KolorsError
from kolors.training.checkpoint import STATE_FILE, _prune, checkpoint_step, complete_checkpoints, find_checkpoint


def _fake(root, step, complete=True):
    folder = root / "checkpoints" / f"step-{step}"
    folder.mkdir(parents=True)
    if complete:
        (folder / STATE_FILE).write_text(json.dumps({"step": step}))
    return folder


def test_latest_skips_incomplete_and_temporary(tmp_path):
    _fake(tmp_path, 5)
    newest = _fake(tmp_path, 20)
    _fake(tmp_path, 30, complete=False)  # killed while renaming: cannot happen, but must not be trusted
    (tmp_path / "checkpoints" / ".step-40.tmp").mkdir()  # killed while saving
    assert find_checkpoint(tmp_path, "latest") == newest
    assert checkpoint_step(newest) == 20
    assert find_checkpoint(tmp_path, str(newest)) == newest


def test_prune_keeps_newest(tmp_path):
    for step in (1, 2, 10):
        _fake(tmp_path, step)
    (tmp_path / "checkpoints" / ".step-11.tmp").mkdir()
    _prune(tmp_path, 2)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-2", "step-10"]
    assert not (tmp_path / "checkpoints" / ".step-11.tmp").exists()


def test_errors(tmp_path):
    with pytest.raises(KolorsError, match="no checkpoint in"):
        find_checkpoint(tmp_path, "latest")
    with pytest.raises(KolorsError, match="not a complete kolors training checkpoint"):
        find_checkpoint(tmp_path, str(tmp_path))
