"""argparse with one-line errors, for the ``kolors`` command and the ``python -m kolors.…`` tools.

A usage error is one line that names the problem and points to ``--help``, not argparse's usage block; the exit
status stays 2. The argument types (``positive_int``, ``finite_number``, …) reject a bad value in that one line,
naming the option and the rule. Imports neither torch nor diffusers.
"""

from __future__ import annotations

import argparse
import math
import re
from typing import NoReturn

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``kolors: error: …`` for the command and its subcommands, ``python -m
    kolors.recipe: error: …`` for a tool."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # A value that begins with a minus and a digit ("-1,2", "-3e-4") is a value, as Python 3.13 reads it;
        # 3.11 and 3.12 know only plain numbers ("-1", "-1.5", "-.5") and take the rest for an unknown option
        # ("expected one argument"), which hides the value's real problem. No option of ours begins with a digit.
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def parse_args(self, args=None, namespace=None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # said by the subcommand that was given them, so its --help is the one named
            self._chosen(parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _chosen(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The innermost subcommand's parser that ``parsed`` went through (this parser when it has none)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                sub = action.choices.get(getattr(parsed, action.dest, None))
                if sub is not None:
                    return sub._chosen(parsed) if isinstance(sub, Parser) else sub
        return self

    def error(self, message: str) -> NoReturn:
        name = "kolors" if self.prog.split()[0] == "kolors" else self.prog
        if message.endswith(": expected one argument"):  # or its value begins with "-", as "-blurry" may
            option = message.removeprefix("argument ").split(":")[0].split("/")[0]
            message += f" (a value that begins with '-' is written {option}=-…)"
        self.exit(EXIT_USAGE, f"{name}: error: {message} (see '{self.prog} --help')\n")


def whole_number(text: str, minimum: int, rule: str) -> int:
    """``text`` as an int of at least ``minimum``; ``rule`` says so in the error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{rule}, got {text}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, 1, "must be a positive integer")


def non_negative_int(text: str) -> int:
    return whole_number(text, 0, "must be 0 or more")


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None


def finite_number(text: str) -> float:
    value = number(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


def positive_number(text: str) -> float:
    value = finite_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_number(text: str) -> float:
    value = finite_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def share(text: str) -> float:
    """A fraction from 0 to 1 (a probability, a share of a pool)."""
    value = finite_number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a share from 0 to 1, got {text}")
    return value
