"""The ``kolors`` command line: one module per command, dispatched from here.

``generate``, ``img2img``, ``inpaint``, ``outpaint`` (cli/generate.py, options in cli/inpaint.py), ``info`` (cli/info.py),
``convert`` (cli/convert.py), ``data shapes`` (cli/data.py), ``train`` (cli/train.py) and ``serve``
(cli/serve.py). Each command module has
``add_parser(sub, common)`` and ``run(args) -> int``; this module assembles the parser, runs the command and turns
every failure into one line: a user mistake (a ``KolorsError``, a usage error, an unwritable output, …) is
``kolors: error: …`` on stderr and exit status 2; Ctrl-C exits with 130 and SIGTERM with 143, after the command
has removed what it had started to write; ``--debug`` shows tracebacks. Importing this module imports neither
torch nor diffusers: a command imports what it needs when it needs it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

from ..arguments import Parser
from ..errors import KolorsError
from ..signals import run_command
from . import convert, data, generate, info, serve, train
from .common import EXIT_ERROR, EXIT_UNEXPECTED, error, threads

# command -> the module that adds its parser and runs it (in the order of `kolors --help`)
COMMANDS: dict[str, ModuleType] = {"generate": generate, "img2img": generate, "inpaint": generate,
                                   "outpaint": generate, "info": info, "convert": convert, "data": data,
                                   "train": train, "serve": serve}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kolors`` command."""
    parser = Parser(prog="kolors", description="Kolors text-to-image: generate, redraw and inspect images.")
    parser.add_argument("--version", action="version", version=f"kolors {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    common = Parser(add_help=False)  # options of every command
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bar or notes (warnings still show)")
    common.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")
    common.add_argument("--threads", type=threads, metavar="N",
                        help="CPU threads for torch and the image libraries (default: $OMP_NUM_THREADS, else one "
                             "per core; on a shared machine 1-2 are often faster)")
    for module in dict.fromkeys(COMMANDS.values()):
        module.add_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kolors`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command(lambda: _main(argv), debug="--debug" in argv)


def _main(argv: list[str]) -> int:
    with warnings.catch_warnings():
        if "--debug" not in argv:
            warnings.simplefilter("ignore")
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version and usage errors (already printed on one line)
            return exc.code if isinstance(exc.code, int) else EXIT_ERROR if exc.code else 0
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run a parsed command, turning every failure into one line on stderr and an exit status."""
    from .environment import command_environment

    try:
        with command_environment(args):
            return COMMANDS[args.command].run(args)
    except KolorsError as exc:
        if args.debug:
            raise
        error(str(exc))
        return EXIT_ERROR
    except BrokenPipeError:  # `kolors info x.png | head -1`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return EXIT_UNEXPECTED
    except Exception as exc:  # noqa: BLE001 - the CLI never shows a raw traceback without --debug
        interrupt = _wrapped_interrupt(exc)
        if interrupt is not None:  # a library turned Ctrl-C / SIGTERM into its own error (diffusers' lazy imports)
            raise interrupt from None
        if args.debug:
            raise
        if type(exc).__name__ == "OutOfMemoryError":  # torch's, raised outside the pipeline's own guard
            error("out of GPU memory: try --offload, fewer --num-images or --batch-size 1, a smaller size, "
                  "or --device cpu")
            return EXIT_ERROR
        first = (str(exc).splitlines() or [""])[0]
        error(f"unexpected {type(exc).__name__}: {first} (run with --debug for details)")
        return EXIT_UNEXPECTED


def _wrapped_interrupt(exc: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt (or Terminated) that ``exc`` was raised from or during, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _version() -> str:
    from ..version import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
