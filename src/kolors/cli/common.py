"""What the command modules share beyond kolors.arguments (the one-line parser, the argument types): the command's
own argument types, exit codes and stderr notes.

Importing this module imports neither torch nor diffusers (``kolors --help`` and usage errors stay fast).
"""

from __future__ import annotations

import argparse
import sys

from ..arguments import EXIT_USAGE, positive_int, whole_number

EXIT_ERROR = EXIT_USAGE  # a one-line error and a usage error end alike
EXIT_UNEXPECTED = 1
MAX_THREADS = 1024


def seed(text: str) -> int:
    return whole_number(text, -1, "must be a non-negative integer (or -1 for random)")  # -1: random, as in A1111


def threads(text: str) -> int:
    value = positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"at most {MAX_THREADS} threads, got {text}")
    return value


def error(message: str) -> None:
    """Print ``kolors: error: message`` on one line of stderr."""
    message = " ".join(message.split()) if "\n" in message else message
    print(f"kolors: error: {message}", file=sys.stderr, flush=True)


def note(args: argparse.Namespace, message: str) -> None:
    """Print ``kolors: message`` on stderr unless ``--quiet``."""
    if not args.quiet:
        print(f"kolors: {message}", file=sys.stderr, flush=True)


def path_and_number(text: str, option: str, what: str) -> tuple[str, float | None]:
    """``PATH[:NUMBER]`` (``--lora style.safetensors:0.8``) as ``(path, number or None)``.

    A colon that belongs to the path (``C:\\loras\\x.safetensors``, a file named ``a:b.png``) is kept; a colon
    after an existing file followed by something that is not a number is a one-line error naming it.
    """
    from pathlib import Path

    from ..errors import KolorsError

    head, sep, tail = text.rpartition(":")
    if not sep or not head:
        return text, None
    try:
        value = float(tail)
    except ValueError:
        if not Path(text).expanduser().exists() and Path(head).expanduser().exists():
            spec = f"{option}{text}" if option.endswith("=") else f"{option} {text}"
            raise KolorsError(f"{spec}: the {what} after ':' must be a number, got '{tail}'") from None
        return text, None
    if Path(text).expanduser().exists() and not Path(head).expanduser().exists():  # "…:2.png" is the file's name
        return text, None
    return head, value
