"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations

import sys
from collections.abc import Callable


class KolorsError(Exception):
    """An error caused by the user's input or environment (bad option, missing file, out of memory).

    The CLI prints ``str(error)`` on one line and exits with status 2; it never shows a traceback
    unless ``--debug`` is given.
    """


class ModelLayoutError(KolorsError):
    """A model folder or weight file is missing, incomplete, or unreadable."""


class InvalidParameterError(KolorsError, ValueError):
    """A generation or training parameter is out of range."""


class GenerationCancelled(KolorsError):
    """A generation was stopped before it finished (a cancelled job, an interrupt); raise it from ``on_step``."""


def run_tool(work: Callable[[], str], prog: str) -> int:
    """The body of a ``python -m`` tool's ``main``: ``work()``'s message on stdout and 0, or a user's error (bad
    input, a file it cannot read or write) as one line ``PROG: error: …`` on stderr and 2 (``prog`` as its usage
    errors name it, e.g. ``python -m kolors.recipe.average``)."""
    try:
        message = work()
    except (KolorsError, ValueError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print(message)
    return 0
