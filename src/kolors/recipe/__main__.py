"""``python -m kolors.recipe --out DIR [...]``: train the built-in model (see :mod:`kolors.recipe.run`).

Ctrl-C or SIGTERM ends it with one line (exit 130 / 143); during diffusion training the run first saves a
checkpoint, so ``--resume`` continues from the step it stopped at.
"""

import logging
import os

from ..signals import import_whole, run_command

# Notes libraries log while they import (diffusers: torchao's optional tensor types; torch: pytree registrations;
# bitsandbytes, which diffusers imports: its optional CPU kernels): not the run's business, and a bad option's
# one-line error came after three of them.
IMPORT_NOTES = ("torch.utils._pytree", "torchao", "bitsandbytes")


def _main() -> int:
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    for name in IMPORT_NOTES:
        logging.getLogger(name).setLevel(logging.ERROR)
    import_whole("kolors.recipe.run")  # a signal during the imports waits for them: one line, not a traceback
    from .run import main

    return main()


if __name__ == "__main__":
    raise SystemExit(run_command(_main, prog="kolors.recipe"))
