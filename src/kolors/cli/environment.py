"""The process settings a command runs under, all put back afterwards (``main()`` can run inside another program).

- kolors' log records as ``kolors: warning: …`` lines on stderr, on one line each;
- library chatter off unless ``--debug``: Python warnings, diffusers/transformers below errors (through their
  ``*_VERBOSITY`` variables when they are not imported yet, so that no command imports them just to quieten
  them), and notes some libraries log while they import;
- ``--threads N``: ``OMP_NUM_THREADS`` for the libraries still to start, ``torch.set_num_threads`` when torch is
  already imported;
- ``OMP_WAIT_POLICY=PASSIVE`` unless set: idle OpenMP threads sleep instead of spinning. On a machine busy with
  other work, spinning threads made a 4-image built-in-model call take 510 s instead of 53 s (2 cores, load 12);
- bitsandbytes hidden from the commands that do not train: diffusers imports it when installed (0.8 s of start-up
  on a CPU, and a warning line), and nothing but 8-bit Adam uses it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from ..libraries import IMPORT_NOTE_LOGGERS, LIBRARY_VERBOSITY

log = logging.getLogger("kolors")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
UNUSED_WHEN_NOT_TRAINING = ("bitsandbytes",)


@contextlib.contextmanager
def command_environment(args: argparse.Namespace) -> Iterator[None]:
    """Run the block with the logging, library verbosity, thread count and imports ``args`` asks for."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(_kolors_logging(args.debug))
        if not args.debug:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
            stack.enter_context(_quiet_libraries())
        stack.enter_context(_environment_default("OMP_WAIT_POLICY", "PASSIVE"))
        if getattr(args, "threads", None):
            stack.enter_context(_threads(args.threads))
        if args.command != "train":
            for name in UNUSED_WHEN_NOT_TRAINING:
                stack.enter_context(_hidden_module(name))
        yield


@contextlib.contextmanager
def _kolors_logging(debug: bool) -> Iterator[None]:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter("kolors: %(levelname)s: %(message)s"))
    saved = (log.handlers[:], log.level, log.propagate)
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.WARNING)
    log.propagate = False
    try:
        yield
    finally:
        log.handlers[:], level, log.propagate = saved
        log.setLevel(level)
        handler.flush()


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    restore: list[Any] = []
    for name in IMPORT_NOTE_LOGGERS:
        logger = logging.getLogger(name)
        restore.append(lambda logger=logger, level=logger.level: logger.setLevel(level))
        logger.setLevel(logging.ERROR)
    imported_before = {lib for lib in LIBRARY_VERBOSITY if lib in sys.modules}
    for lib, variable in LIBRARY_VERBOSITY.items():
        if lib in imported_before:
            module = importlib.import_module(f"{lib}.utils.logging")
            restore.append(lambda module=module, level=module.get_verbosity(): module.set_verbosity(level))
            module.set_verbosity_error()
        elif variable not in os.environ:
            os.environ[variable] = "error"
            restore.append(lambda variable=variable: os.environ.pop(variable, None))
    try:
        yield
    finally:
        for undo in reversed(restore):
            undo()
        for lib in set(LIBRARY_VERBOSITY) - imported_before:  # imported during the command: back to their default
            if lib in sys.modules:
                importlib.import_module(f"{lib}.utils.logging").set_verbosity_warning()


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    saved_env = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, str(count)))
    torch = sys.modules.get("torch")
    saved_torch = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if saved_torch is not None:
            torch.set_num_threads(saved_torch)


# Libraries that note at import time whether an optional package is installed, and import it later on that basis:
# once one of them is imported, hiding the package would break it.
AVAILABILITY_CHECKERS = ("diffusers", "transformers", "peft", "accelerate")


@contextlib.contextmanager
def _environment_default(name: str, value: str) -> Iterator[None]:
    """``name=value`` in the environment unless the user set ``name``."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


@contextlib.contextmanager
def _hidden_module(name: str) -> Iterator[None]:
    """``name`` looks not installed (``find_spec`` is None, import fails), when neither it nor a library that
    checked for it is imported yet (in a fresh ``kolors`` process, always)."""
    hide = not any(module in sys.modules for module in (name, *AVAILABILITY_CHECKERS))
    if hide:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if hide and sys.modules.get(name, 0) is None:
            del sys.modules[name]


class _OneLineFormatter(logging.Formatter):
    """Lower-case level names and no line breaks inside a message."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.levelname = record.levelname.lower()
        text = super().format(record)
        return " ".join(text.split("\n")) if "\n" in text and not record.exc_info else text
