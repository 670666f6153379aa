"""Where the images of a generating command go: ``--output NAME.png`` or a folder of numbered files."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import KolorsError

DEFAULT_OUTPUT_DIR = Path("outputs")
# Output names kolors would write in a folder: <counter>-<seed>.png, A1111's convention.
_NUMBERED = re.compile(r"^(\d+)-")
_OTHER_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif")


class OutputPlan:
    """Where the images go: one named PNG (``NAME-<i>.png`` for several), or numbered files in a folder.

    The target is checked when the plan is made (before the model loads); folders are created only when the
    first image is written. Numbered names never replace an existing file, even with several kolors running.
    """

    def __init__(self, output: str | None, count: int) -> None:
        text = str(DEFAULT_OUTPUT_DIR) if output is None else output
        target = Path(text).expanduser()
        self.count = count
        self.index = 0
        if text.endswith(("/", os.sep)) or target.is_dir():
            self.file, self.folder = None, target
        elif target.suffix.lower() == ".png":
            self.file, self.folder = target, target.parent
        elif target.suffix.lower() in _OTHER_IMAGE_SUFFIXES:
            raise KolorsError(f"kolors writes PNG files (they carry the generation parameters): use "
                              f"--output {target.with_suffix('.png')} or a folder")
        else:
            self.file, self.folder = None, target
        self._check_writable()
        self._check_named_files()

    def _named_files(self) -> list[Path]:
        """The files an ``--output NAME.png`` writes: NAME.png, or NAME-0.png … for several images."""
        if self.file is None:
            return []
        if self.count == 1:
            return [self.file]
        return [self.file.with_name(f"{self.file.stem}-{i}{self.file.suffix}") for i in range(self.count)]

    def _check_named_files(self) -> None:
        """A named output replaces only a PNG kolors wrote (it carries kolors' parameters chunk), never another
        file the user has under that name."""
        from ..metadata import JSON_CHUNK, read_png_text

        for path in self._named_files():
            if not os.path.lexists(path):
                continue
            try:
                ours = path.is_file() and not path.is_symlink() and JSON_CHUNK in read_png_text(path)
            except KolorsError:
                ours = False
            if not ours:
                raise KolorsError(f"{path} exists and kolors did not write it: choose another --output "
                                  "(nothing was written)")

    def _check_writable(self) -> None:
        existing = self.folder
        while not existing.exists():
            if existing.parent == existing:
                break
            existing = existing.parent
        if not existing.is_dir():
            raise KolorsError(f"cannot create output folder {self.folder}: {existing} is a file")
        # A real write, not os.access: that says yes to root on read-only mounts, /proc, /sys, …
        probe = existing / f".kolors-write-test-{os.getpid()}-{id(self):x}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
        except OSError as exc:
            what = "output folder" if existing == self.folder else "output folder's parent"
            raise KolorsError(f"{what} {existing} is not writable ({exc.strerror or exc}): "
                              "choose another --output") from None

    def save(self, image: Any, params: dict[str, Any], seed: int) -> Path:
        from ..metadata import save_png

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise KolorsError(f"cannot create output folder {self.folder}: {exc.strerror or exc}") from None
        i, self.index = self.index, self.index + 1
        if self.file is not None:  # the name the user gave (an existing one only if kolors wrote it: see above)
            return save_png(image, self._named_files()[i], params)
        number = self._next_number()
        for _ in range(1000):
            try:
                return save_png(image, self.folder / f"{number:05d}-{seed}.png", params, overwrite=False)
            except FileExistsError:
                number += 1
        raise KolorsError(f"cannot find a free file name in {self.folder}")

    def _next_number(self) -> int:
        numbers = [int(m[1]) for p in self.folder.iterdir() if (m := _NUMBERED.match(p.name))]
        return max(numbers, default=-1) + 1

