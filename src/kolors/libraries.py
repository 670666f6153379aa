"""What kolors' commands know of the libraries they import: the notes those libraries log while they import
(optional parts not installed: torchao's tensor types, bitsandbytes' CPU kernels, torch's pytree registrations),
and the environment variables that set diffusers' and transformers' verbosity before they are imported.

``kolors.cli.environment`` turns them off for a command and restores them afterwards; a ``python -m`` tool that
owns its process turns them off for good with :func:`quiet_import_notes`. Imports neither library.
"""

from __future__ import annotations

import logging
import os

__all__ = ["IMPORT_NOTE_LOGGERS", "LIBRARY_VERBOSITY", "quiet_import_notes"]

IMPORT_NOTE_LOGGERS = ("torchao", "torch.utils._pytree", "bitsandbytes")
LIBRARY_VERBOSITY = {"diffusers": "DIFFUSERS_VERBOSITY", "transformers": "TRANSFORMERS_VERBOSITY"}


def quiet_import_notes(*libraries: str) -> None:
    """Errors only from the import-note loggers, and from ``libraries`` (of ``LIBRARY_VERBOSITY``) where the user
    set no verbosity of their own; call it before they are imported."""
    for name in IMPORT_NOTE_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for lib in libraries:
        os.environ.setdefault(LIBRARY_VERBOSITY[lib], "error")
