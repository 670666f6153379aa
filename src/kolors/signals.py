"""SIGINT and SIGTERM as exceptions, so that an interrupted command cleans up what it started.

:class:`ExitSignals` is installed by the command line for the length of a command: Ctrl-C raises
``KeyboardInterrupt`` and SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt`` too, so every ``except
KeyboardInterrupt`` / ``finally`` clean-up runs for both). Inside :func:`deferred` sections - creating a temporary
file and registering it for removal, renaming it into place, removing it - a signal waits for the end of the
section, so that no file is left half-made by an unlucky moment. Without the handler installed (the Python API),
``deferred`` does nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

EXIT_SIGINT = 130  # 128 + the signal number: what shells report
EXIT_SIGTERM = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM was received (``kill PID``, a service manager stopping the process, a container shutting down)."""


def exit_status(exc: KeyboardInterrupt) -> int:
    """The conventional exit status after ``exc``: 143 for SIGTERM, 130 for Ctrl-C."""
    return EXIT_SIGTERM if isinstance(exc, Terminated) else EXIT_SIGINT


class ExitSignals:
    """A handler for SIGINT and SIGTERM that raises in the main thread, except inside :func:`deferred` sections."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.depth = 0  # nested deferred sections now running
        self.pending: int | None = None  # the first signal received inside them

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.depth:
            self.pending = self.pending or signum
            return
        raise _exception(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[ExitSignals]:
        """This handler for SIGINT and SIGTERM while the block runs (in the main thread; elsewhere nothing)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self) for s in self.SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def hold(self) -> None:
        """From now on only record signals (the process is already on its way out)."""
        self.depth += 1

    def release(self) -> None:
        """End a deferred section; raise the signal that arrived during it, if any."""
        self.depth -= 1
        if self.depth == 0 and self.pending is not None:
            signum, self.pending = self.pending, None
            raise _exception(signum)


def _exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A section that SIGINT/SIGTERM do not interrupt: a signal received inside is raised when it ends."""
    handler = signal.getsignal(signal.SIGTERM)
    if not isinstance(handler, ExitSignals) or threading.current_thread() is not threading.main_thread():
        yield
        return
    handler.depth += 1
    try:
        yield
    finally:
        handler.release()


def import_whole(*modules: str) -> None:
    """Import ``modules`` with SIGINT/SIGTERM held until they are loaded.

    A signal in the middle of a large library's import can leave it half-initialised, and libraries swallow or wrap
    the exception on the way out (numpy then recurses without end and diffusers reports a RuntimeError instead of the
    interrupt); held, the signal is raised as soon as the imports are complete, a few seconds at most.
    """
    with deferred():
        for name in modules:
            importlib.import_module(name)


def run_command(main: Callable[[], int], prog: str = "kolors", *, debug: bool = False) -> int:
    """``main()`` under :class:`ExitSignals`; Ctrl-C or SIGTERM ends it with one line and 130/143, not a traceback
    (``debug``: re-raise instead). The ``kolors`` command and the ``python -m`` tools run this way."""
    signals = ExitSignals()
    with signals.installed():
        try:
            return main()
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM, wherever it arrived (clean-up has run)
            signals.hold()  # a second signal while this is reported is not another traceback
            if debug:
                raise
            word = "terminated" if isinstance(exc, Terminated) else "interrupted"
            print(f"{prog}: error: {word}", file=sys.stderr, flush=True)
            return exit_status(exc)
