"""The ``kolors`` command line: one module per command, dispatched from here.

``generate``, ``img2img``, ``inpaint``, ``outpaint`` (cli/generate.py, cli/inpainting.py), ``info`` (cli/info.py),
``convert`` (cli/convert.py), ``data shapes`` (cli/data.py) and ``train`` (cli/train.py). Each command module has
``add_parser(sub, common)`` and ``run(args) -> int``; this module assembles the parser, runs the command and turns
every failure into one line: a user mistake (a ``KolorsError``, a usage error, an unwritable output, …) is
``kolors: error: …`` on stderr and exit status 2; Ctrl-C exits with 130; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

from ..errors import KolorsError
from . import convert, data, generate, info, train
from .common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_UNEXPECTED, Parser, error

# command -> the module that adds its parser and runs it (in the order of `kolors --help`)
COMMANDS: dict[str, ModuleType] = {"generate": generate, "img2img": generate, "inpaint": generate,
                                   "outpaint": generate, "info": info, "convert": convert, "data": data,
                                   "train": train}

log = logging.getLogger("kolors")
QUIET_LOGGERS = ("torchao", "torch.utils._pytree")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kolors`` command."""
    parser = Parser(prog="kolors", description="Kolors text-to-image: generate, redraw and inspect images.")
    parser.add_argument("--version", action="version", version=f"kolors {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    common = Parser(add_help=False)  # options of every command
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bar or notes (warnings still show)")
    common.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")
    for module in dict.fromkeys(COMMANDS.values()):
        module.add_parser(sub, common)
    return parser


# --- entry point -----------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kolors`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        if "--debug" not in argv:  # library warnings while importing torch/diffusers for the parser
            warnings.simplefilter("ignore")
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version and usage errors (already printed on one line)
            return exc.code if isinstance(exc.code, int) else EXIT_ERROR if exc.code else 0
        except KeyboardInterrupt:  # while torch is being imported
            error("interrupted")
            return EXIT_INTERRUPTED
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run a parsed command, turning every failure into one line on stderr and an exit status."""
    with _cli_logging(args.debug, args.command != "info"):
        try:
            return COMMANDS[args.command].run(args)
        except KolorsError as exc:
            if args.debug:
                raise
            error(str(exc))
            return EXIT_ERROR
        except KeyboardInterrupt:
            if args.debug:
                raise
            error("interrupted")
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # `kolors info x.png | head -1`
            with contextlib.suppress(OSError):
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
            return EXIT_UNEXPECTED
        except Exception as exc:  # noqa: BLE001 - the CLI never shows a raw traceback without --debug
            if args.debug:
                raise
            if type(exc).__name__ == "OutOfMemoryError":  # torch's, raised outside the pipeline's own guard
                error("out of GPU memory: try --offload, fewer --num-images or --batch-size 1, a smaller size, "
                      "or --device cpu")
                return EXIT_ERROR
            first = (str(exc).splitlines() or [""])[0]
            error(f"unexpected {type(exc).__name__}: {first} (run with --debug for details)")
            return EXIT_UNEXPECTED


# --- logging ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _cli_logging(debug: bool, libraries: bool) -> Iterator[None]:
    """kolors' log records as ``kolors: warning: …`` lines on stderr; library chatter off unless ``debug``.

    Everything is put back afterwards, so ``main()`` can run inside another program (or a test session).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter("kolors: %(levelname)s: %(message)s"))
    saved = (log.handlers[:], log.level, log.propagate)
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.WARNING)
    log.propagate = False
    verbosity: list[tuple[Any, int]] = []
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.simplefilter("ignore")
                for name in QUIET_LOGGERS:  # notes printed while torch/torchao import (optional kernels)
                    logger = logging.getLogger(name)
                    verbosity.append((logger, logger.level))
                    logger.setLevel(logging.ERROR)
                if libraries:
                    import diffusers.utils.logging
                    import transformers.utils.logging

                    for lib in (diffusers.utils.logging, transformers.utils.logging):
                        verbosity.append((lib, lib.get_verbosity()))
                        lib.set_verbosity_error()
            yield
    finally:
        for lib, level in verbosity:
            if isinstance(lib, logging.Logger):
                lib.setLevel(level)
            else:
                lib.set_verbosity(level)
        log.handlers[:], level, log.propagate = saved
        log.setLevel(level)
        handler.flush()


class _OneLineFormatter(logging.Formatter):
    """Lower-case level names and no line breaks inside a message."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.levelname = record.levelname.lower()
        text = super().format(record)
        return " ".join(text.split("\n")) if "\n" in text and not record.exc_info else text


def _version() -> str:
    from ..version import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())

