"""``python -m kolors.recipe --out DIR [...]``: train the built-in model (see :mod:`kolors.recipe.run`).

Ctrl-C or SIGTERM ends it with one line (exit 130 / 143); during diffusion training the run first saves a
checkpoint, so ``--resume`` continues from the step it stopped at.
"""

from ..libraries import quiet_import_notes
from ..signals import import_whole, run_command
from . import PROG


def _main() -> int:
    quiet_import_notes("diffusers")  # the run imports torch and diffusers before it reads its options
    import_whole("kolors.recipe.run")  # a signal during the imports waits for them: one line, not a traceback
    from .run import main

    return main()


if __name__ == "__main__":
    raise SystemExit(run_command(_main, prog=PROG))
