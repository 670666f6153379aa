"""Every GPU measurement of issue 17 in one command, in priority order, inside one deadline.

On the device machine (see benchmarks/README.md for the exact `run` call; gpu_run.sh installs the carried wheels):
    bash benchmarks/gpu_run.sh                                  # all parts, --deadline-s 480
    bash benchmarks/gpu_run.sh --parts 3,4 --deadline-s 200     # a rerun of some parts
Anywhere, before spending a GPU session (the test suite runs this too):
    PYTHONPATH=src python benchmarks/gpu_all.py --smoke --out /tmp/smoke

Full-size random-weight Kolors is built once on the device in fp16 and written once as a diffusers-layout folder;
ours loads that folder through ``kolors.load_pipeline``, diffusers' KolorsPipeline runs over the built modules.
Parts (issue 17's order): 1 exact vs diffusers eager and compiled, with the UNet step's TFLOP/s against a GEMM;
2 low-memory and sequential peaks and times; 3 fast mode and its fp8 layers; 4 batch throughput and cold start;
5 LoRA and full fine-tune memory and s/step (bench_training.py); 6 the built-in model's recipe for the time left.
1024², 50 steps, guidance 5, s/image the median of --runs rounds after a warm-up call. Every row is appended to
OUT/gpu_all.jsonl and OUT/gpu_all.md as soon as it is measured; a part that fails records its traceback and the
next part runs; nothing new starts that would not finish before --deadline-s. Exit status 1 if a row failed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import gpu_parts  # noqa: E402
from gpu_session import Clock, OutOfTime, Results, Session, describe  # noqa: E402

PARTS = {
    "1": ("exact mode vs diffusers, eager and torch.compile", gpu_parts.part_exact),
    "2": ("low-memory and sequential modes", gpu_parts.part_memory),
    "3": ("fast mode and its fp8 layers", gpu_parts.part_fast),
    "4": ("throughput by batch size, cold start", gpu_parts.part_batch),
    "5": ("training memory and speed", gpu_parts.part_training),
    "6": ("the built-in model's recipe from scratch", gpu_parts.part_recipe),
}
MIN_PART_S = 20  # a part is not started with less time than this left
SMOKE = dict(size=64, steps=2, runs=2, gemm_n=256, batches=[1, 2], train_size=64, train_steps=2, deadline_s=170,
             recipe_min_minutes=0.05,
             recipe_args="--architecture tiny --image-size 64 --workers 1 --pool-size 32 --tokenizer-scenes 200 "
                         "--steps-vae 2 --batch-size-vae 4 --steps-diffusion 4 --batch-size 4 --warmup-steps 1 "
                         "--skip-eval --log-seconds 0")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated part numbers, run in this order")
    ap.add_argument("--deadline-s", type=float, help="start nothing that would end later (default 480; smoke 170)")
    ap.add_argument("--smoke", action="store_true", help="the same code at toy sizes (CPU, under a minute)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "/tmp/kolors-gpu-all"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/kolors-gpu-all-work"), help="model folder, training")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3, help="timed rounds per figure (median), after a warm-up call")
    ap.add_argument("--gemm-n", type=int, default=8192)
    ap.add_argument("--batches", type=lambda t: [int(x) for x in t.split(",")], default=[1, 2, 4])
    ap.add_argument("--drop-page-cache", action="store_true", help="part 4: also a cold start with the page cache "
                    "dropped (root; writes /proc/sys/vm/drop_caches: only on a machine of your own)")
    ap.add_argument("--train-size", type=int, default=1024)
    ap.add_argument("--train-steps", type=int, help="per training run (default: bench_training.py's)")
    ap.add_argument("--recipe-cmd", help='part 6: the program, e.g. "python -m kolors.recipe" (default: the first '
                    f"of {', '.join(gpu_parts.RECIPE_MODULES)} found); --out/--device/--time-budget-minutes follow")
    ap.add_argument("--recipe-args", default="", help="part 6: more arguments for the recipe")
    ap.add_argument("--recipe-min-minutes", type=float, default=2.0)
    args = ap.parse_args(argv)
    if args.smoke:
        raw = sys.argv[1:] if argv is None else argv
        given = {k for k in SMOKE if any(a.startswith("--" + k.replace("_", "-")) for a in raw)}
        for key, value in SMOKE.items():
            if key not in given:
                setattr(args, key, value)
    args.deadline_s = 480.0 if args.deadline_s is None else args.deadline_s
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        ap.error(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    return args


def header(args: argparse.Namespace) -> dict[str, str]:
    """Date, device, driver, versions and settings: what a reader needs to place the numbers."""
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    def command(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip() or "?"
        except (OSError, subprocess.TimeoutExpired):
            return "n/a"

    if torch.device(args.device).type == "cuda":
        props = torch.cuda.get_device_properties(0)
        device = f"{props.name}, compute capability {props.major}.{props.minor}, {props.total_memory / 2**30:.0f} GiB"
        driver = command("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")
    else:
        device, driver = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)", "n/a"
    root = Path(__file__).resolve().parent.parent
    return {
        "date (UTC)": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "device": device,
        "driver": driver,
        "torch / CUDA": f"{torch.__version__} / {torch.version.cuda}",
        "diffusers / transformers / torchao / bitsandbytes": " / ".join(
            version(n) for n in ("diffusers", "transformers", "torchao", "bitsandbytes")),
        "python": platform.python_version(),
        "kolors commit": command("git", "-C", str(root), "rev-parse", "--short", "HEAD"),
        "settings": f"{'SMOKE (toy sizes), ' if args.smoke else ''}{args.size}², {args.steps} steps, guidance 5, "
                    f"median of {args.runs} after a warm-up; parts {','.join(args.parts)}; "
                    f"deadline {args.deadline_s:.0f} s",
    }


def run_parts(session: Session, keys: list[str]) -> None:
    """Each part in turn: failures and the deadline are recorded as rows, and the next part still runs."""
    results, clock = session.results, session.clock
    for key in keys:
        title, fn = PARTS[key]
        if clock.left() < MIN_PART_S:
            results.add(key, "not started", "deadline", f"{max(clock.left(), 0):.0f} s left", status="deadline")
            continue
        print(f"\n=== part {key}: {title} ({clock.left():.0f} s left)", flush=True)
        t0 = time.monotonic()
        try:
            fn(session)
        except OutOfTime as exc:
            results.add(key, "stopped", "deadline", str(exc), status="deadline")
        except Exception as exc:  # noqa: BLE001 - recorded; the next part runs
            results.add(key, "failed", describe(exc), status="error", traceback=traceback.format_exc())
        finally:
            session.release()
        results.add(key, "part wall time (s)", f"{time.monotonic() - t0:.0f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    clock = Clock(args.deadline_s)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    titles = {"0": "the random model", **{k: v[0] for k, v in PARTS.items()}}
    results = Results(args.out, header(args), titles, clock)
    run_parts(Session(args, clock, results), args.parts)
    counts = results.statuses()
    print(f"\n{results.md}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), flush=True)
    print(results.md.read_text(), flush=True)
    return 1 if counts.get("error") else 0


if __name__ == "__main__":
    raise SystemExit(main())
