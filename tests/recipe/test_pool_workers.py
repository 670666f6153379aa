"""The recipe's pool workers under the command line's signal handler: the pool always ends.

``python -m kolors.recipe`` runs under :class:`kolors.signals.ExitSignals`, which forked workers inherit. The pool's
exit sends SIGTERM to its workers; with the inherited handler a worker could be stopped while it held the task
queue's lock, and the pool's exit then waited for the other worker for ever (a run of the recipe hung so, at 0 % CPU,
after rendering its pool). Run in a child process: it installs the handler for itself.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import signal
    import numpy as np
    import kolors.recipe.pool as pool
    from kolors.signals import ExitSignals

    def probe(args):  # what render_pool concatenates; the layout column says how the worker takes signals
        n = args[1]
        ok = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        z = np.zeros((n, 1), dtype=np.int64)
        return np.zeros((n, 2, 2, 3), dtype=np.uint8), np.full(n, ok), [z, z, z], None

    pool._render_chunk = probe
    with ExitSignals().installed():
        for _ in range(60):
            rendered = pool.render_pool(4 * pool.CHUNK, tokenizer_dir="unused", size=2, workers=2)
    print("workers with default signals:", bool(rendered.layout.all()))
""")


def test_pool_workers_take_default_signals_and_the_pool_always_ends():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stdout.strip() == "workers with default signals: True", done.stdout
