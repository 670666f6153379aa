"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations


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
