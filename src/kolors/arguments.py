"""argparse with one-line errors, for the ``kolors`` command and the ``python -m kolors.…`` tools.

A usage error is one line that names the problem and points to ``--help``, not argparse's usage block; the exit
status stays 2. Imports neither torch nor diffusers.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``kolors: error: …`` for the command and its subcommands, ``python -m
    kolors.recipe: error: …`` for a tool."""

    def error(self, message: str) -> NoReturn:
        name = "kolors" if self.prog.split()[0] == "kolors" else self.prog
        self.exit(EXIT_USAGE, f"{name}: error: {message} (see '{self.prog} --help')\n")
