"""Training checkpoints: ``OUTPUT/checkpoints/step-N`` folders written atomically, found again on resume."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from accelerate import Accelerator

from ..errors import KolorsError

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dir(output: Path) -> Path:
    """Where a run's checkpoints live."""
    return output / "checkpoints"


def save_checkpoint(accelerator: Accelerator, output: Path, step: int, keep: int | None) -> Path:
    """accelerate's full state after ``step`` steps, in a temporary folder renamed to ``step-N`` when complete."""
    folder = checkpoint_dir(output) / f"step-{step}"
    tmp = checkpoint_dir(output) / f".step-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({"step": step}) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        _prune(output, keep)
    accelerator.wait_for_everyone()
    return folder


def find_checkpoint(output: Path, resume: str) -> Path:
    """The checkpoint folder ``resume`` names: "latest" (the newest complete one under ``output``) or a path."""
    if resume != "latest":
        folder = Path(resume).expanduser()
        if not (folder / STATE_FILE).is_file():
            raise KolorsError(f"not a complete kolors training checkpoint: {folder} (no {STATE_FILE})")
        return folder
    done = complete_checkpoints(output)
    if not done:
        raise KolorsError(f"--resume latest: no checkpoint in {checkpoint_dir(output)} (start without --resume)")
    return done[-1]


def checkpoint_step(folder: Path) -> int:
    """The number of optimizer steps a checkpoint was taken after."""
    return int(json.loads((folder / STATE_FILE).read_text())["step"])


def complete_checkpoints(output: Path) -> list[Path]:
    """Finished ``step-N`` folders, oldest first (half-written ``.tmp`` folders of a killed run are ignored)."""
    root = checkpoint_dir(output)
    if not root.is_dir():
        return []
    found = [(int(m[1]), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def _prune(output: Path, keep: int | None) -> None:
    """Delete all but the newest ``keep`` checkpoints, and leftovers of interrupted saves."""
    for tmp in checkpoint_dir(output).glob(".step-*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
    if keep is not None:
        for old in complete_checkpoints(output)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
