"""The JSON report an evaluation command writes with ``--json``: checked before any model loads, written whole."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ..files import write_text

__all__ = ["check_report_path", "write_report"]


def check_report_path(parser: argparse.ArgumentParser, path: Path | None) -> None:
    """``parser.error`` (one line, exit 2) when ``path`` could not be written, so a long run never ends unsaved."""
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        parser.error(f"--json {path} is a folder: name a file such as {path / 'report.json'}")
    if not folder.is_dir():
        parser.error(f"--json {path}: the folder {folder} does not exist; create it or name another")
    if not os.access(folder, os.W_OK):
        parser.error(f"--json {path}: the folder {folder} is not writable; name another")


def write_report(path: Path, data: Any, *, indent: int = 1) -> None:
    """``data`` as UTF-8 JSON, replacing ``path`` atomically (a complete file or none)."""
    write_text(path, json.dumps(data, indent=indent, ensure_ascii=False, default=str) + "\n")
