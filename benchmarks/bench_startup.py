"""Start-up of the ``kolors`` command: this checkout against another git revision, same machine, same run.

Usage (repo root):  python benchmarks/bench_startup.py --baseline REV [--runs 5] [--threads 1]
                    (REV: e.g. de9f0ce, the code before issue 12's start-up work)

Measures, for each code version, the whole process (interpreter start to exit) of
  generate:   kolors generate "a red circle" --steps 2 -o OUT.png -q   (the built-in model, 128x128)
  bad width:  kolors generate "a red circle" --width 13                 (a mistake reported with exit status 2)
The baseline is checked out with ``git worktree add`` into a temporary folder; both versions run with the same
Python, interleaved (A B A B ...), so that load from other work on the machine hits both alike. Reported: median
wall seconds, median CPU seconds (user + system of the process, less sensitive to a busy machine) and the ratio
this/baseline of each.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CALLS = {
    "generate": (["generate", "a red circle", "--steps", "2", "-o", "{out}/image.png", "-q"], 0),
    "bad width": (["generate", "a red circle", "--width", "13"], 2),
}


def run_once(src: Path, argv: list[str], expected: int, threads: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ``python -m kolors`` process using the package in ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads)}
    env.pop("KOLORS_MODEL", None)
    with tempfile.TemporaryDirectory() as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "kolors", *(a.format(out=out) for a in argv)], env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != expected:
        raise SystemExit(f"{src}: kolors {' '.join(argv)} exited {done.returncode}, expected {expected}:\n"
                         f"{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare with")
    parser.add_argument("--runs", type=int, default=5, help="processes per call and version (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the measured processes")
    args = parser.parse_args()
    baseline = args.baseline
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(tree), baseline], cwd=ROOT, check=True)
        try:
            versions = {"this": ROOT / "src", "baseline": tree / "src"}
            results = {(call, v): [] for call in CALLS for v in versions}
            for name, (argv, expected) in CALLS.items():
                for version, src in versions.items():  # warm the file cache once
                    run_once(src, argv, expected, args.threads)
                for _ in range(args.runs):
                    for version, src in versions.items():
                        results[name, version].append(run_once(src, argv, expected, args.threads))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    print(f"baseline {baseline[:10]}, {args.runs} runs each, OMP_NUM_THREADS={args.threads}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| call | baseline wall s | this wall s | ratio | baseline CPU s | this CPU s | ratio |")
    print("|------|-----------------|-------------|-------|----------------|------------|-------|")
    for name in CALLS:
        base = [statistics.median(x) for x in zip(*results[name, "baseline"])]
        this = [statistics.median(x) for x in zip(*results[name, "this"])]
        print(f"| {name} | {base[0]:.2f} | {this[0]:.2f} | {this[0] / base[0]:.2f} | {base[1]:.2f} | {this[1]:.2f} "
              f"| {this[1] / base[1]:.2f} |")


if __name__ == "__main__":
    main()
