"""Writing files and folders whole or not at all, and never removing what the writer did not create.

:func:`atomic_file` gives a new hidden temporary file beside the target and renames it into place when the block
succeeds; :func:`staging_folder` does the same for a folder. On an error, Ctrl-C or SIGTERM the temporary file or
folder - and only it, with a fresh unique name nobody else uses - is removed. Creating, renaming and removing run
as :func:`kolors.signals.deferred` sections, so a signal cannot fall between creating a temporary and registering
it for removal.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import KolorsError
from .signals import deferred

__all__ = ["atomic_file", "staging_folder", "write_bytes", "write_text"]


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """A temporary path to write ``path``'s content to; renamed to ``path`` when the block ends without error.

    ``path`` is therefore either absent, its old content, or complete. ``overwrite=False`` keeps an existing
    ``path`` and raises ``FileExistsError`` (atomically where the file system has hard links). An unwritable
    folder is a one-line ``KolorsError`` naming ``path``.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        with deferred():
            tmp = _new_temporary(path)
        yield tmp
        _fsync(tmp)
        with deferred():
            if overwrite:
                os.replace(tmp, path)
            else:
                _rename_no_replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with deferred():
                tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            raise KolorsError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staging_folder(destination: str | os.PathLike, *,
                   replace: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """A new empty folder to fill; renamed to ``destination`` when the block ends without error.

    ``destination`` must not exist or be an empty folder, unless ``replace`` is given: it is called with the
    existing folder just before the swap (it must raise if that folder may not be replaced), and the old folder is
    removed only after the new one is in place. Missing parent folders are created, and removed again on failure.
    """
    destination = Path(destination)
    made_parents: list[Path] = []
    tmp: Path | None = None
    try:
        with deferred():
            made_parents = _make_parents(destination.parent)
            tmp = _new_temporary(destination, folder=True)
        yield tmp
        if destination.exists() and replace is not None and not _is_empty_folder(destination):
            replace(destination)
            with deferred():
                old = _new_temporary(destination, folder=True)
                os.replace(destination, old)  # the new folder moves in before the old one goes
                os.replace(tmp, destination)
                tmp = None
            shutil.rmtree(old, ignore_errors=True)
        else:
            with deferred():
                os.rename(tmp, destination)  # POSIX: also replaces an empty folder, never a full one
                tmp = None
    except BaseException as exc:
        with deferred():
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            for parent in reversed(made_parents):
                with contextlib.suppress(OSError):
                    parent.rmdir()
        if isinstance(exc, OSError):
            raise KolorsError(f"cannot write {destination}: {exc.strerror or exc}") from None
        raise


def _new_temporary(path: Path, *, folder: bool = False) -> Path:
    """A new hidden file (or folder) beside ``path``, with the usual permissions (0666/0777 less the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            if folder:
                tmp.mkdir(0o777)
            else:
                os.close(os.open(tmp, flags, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as exc:
            if not path.parent.is_dir():
                what = "is not a folder" if path.parent.exists() else "does not exist"
                raise KolorsError(f"cannot write {path}: the folder {path.parent} {what}") from None
            raise KolorsError(f"cannot write {path}: {exc.strerror or exc}") from None
    raise KolorsError(f"cannot write {path}: no free temporary name in {path.parent}")


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, outermost first."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    if folder.exists() and not folder.is_dir():
        raise KolorsError(f"cannot create {missing[-1] if missing else folder}: {folder} is a file")
    made = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            for done in reversed(made):
                with contextlib.suppress(OSError):
                    done.rmdir()
            raise KolorsError(f"cannot create folder {path}: {exc.strerror or exc}") from None
        made.append(path)
    return made


def _is_empty_folder(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename_no_replace(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists (then FileExistsError)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links on this file system: check, then rename (a small race)
        if path.exists():
            raise FileExistsError(17, "File exists", str(path)) from None
        os.replace(tmp, path)
        return
    tmp.unlink(missing_ok=True)
