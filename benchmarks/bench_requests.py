"""One warm pipeline, many different requests: what switching adapters costs per request, and whether plain
generation got slower than the code before the redesign (kolors 0.1's Text2ImagePipeline, same run).

Usage (repo root, installed venv):
    .venv/bin/python benchmarks/bench_requests.py [--runs 7] [--old-rev de9f0ce] [--threads 1]

Measured on the built-in model at its defaults (128², 25 steps), in this process unless stated:
- plain generation, s/image: this code vs the old code (``git worktree`` of ``--old-rev`` in a temporary folder,
  run in subprocesses alternating with this code's, so both see the same machine load); medians;
- the cost a request adds by naming adapters, as the median of (request with adapter) − (plain request) seconds:
  a LoRA (UNet + text encoder, first use: read + inject; later uses: activate only), switching LoRA A → B, the shipped
  canny ControlNet (first use: load; later: attach), and plain generation right after a LoRA request (inactive
  peft layers left in the model) vs a pipeline that never saw one.
Prints a Markdown table last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "一个红色的圆形"

PLAIN_OLD = """
import json, statistics, sys, time, torch
torch.set_num_threads({threads})
from kolors import load_pipeline
pipe = load_pipeline(device="cpu")
pipe("{prompt}", seed=0, progress=False)
times = []
for i in range({runs}):
    t0 = time.perf_counter(); pipe("{prompt}", seed=i, progress=False); times.append(time.perf_counter() - t0)
print("RESULT", json.dumps(times))
"""


def timed(fn, runs: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def plain_in_subprocess(src: Path, runs: int, threads: int) -> list[float]:
    code = PLAIN_OLD.format(threads=threads, prompt=PROMPT, runs=runs)
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.split("RESULT", 1)[1])


def random_lora(pipe, path: Path, seed: int) -> Path:
    """A random LoRA for the built-in model (UNet attention + ChatGLM query_key_value), as diffusers saves one."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers.tiny_lora import peft_lora, write_lora

    c = pipe.components
    return write_lora(path, peft_lora(c.unet, ["to_q", "to_k", "to_v", "to_out.0"], 8, seed, spread=0.02),
                      peft_lora(c.text_encoder, ["query_key_value"], 4, seed, spread=0.02))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--old-rev", default="de9f0ce", help="the code before the redesign (kolors 0.1)")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from kolors import Control, GenerationRequest, Lora, load_pipeline
    from kolors.loading.locate import EMBEDDED_MODEL_DIR, conventional_controlnet_folder

    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = tmp / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.old_rev], check=True,
                       capture_output=True)
        try:
            new_times, old_times = [], []
            for _ in range(2):  # alternate: both see the same load
                old_times += plain_in_subprocess(old / "src", args.runs, args.threads)
                new_times += plain_in_subprocess(ROOT / "src", args.runs, args.threads)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
        old_s, new_s = statistics.median(old_times), statistics.median(new_times)
        rows.append(("plain generation, old code (kolors 0.1), s/image", f"{old_s:.3f}"))
        rows.append(("plain generation, this code, s/image", f"{new_s:.3f}"))
        rows.append(("this code / old code (same run)", f"{new_s / old_s:.3f}"))

        pipe = load_pipeline(device="cpu")
        a, b = random_lora(pipe, tmp / "a.safetensors", 1), random_lora(pipe, tmp / "b.safetensors", 2)
        shipped = conventional_controlnet_folder("canny", EMBEDDED_MODEL_DIR)
        scene = tmp / "scene.png"
        from PIL import Image, ImageDraw

        image = Image.new("RGB", (128, 128))
        ImageDraw.Draw(image).ellipse((20, 20, 60, 60), fill=(255, 255, 255))
        image.save(scene)

        def run(**fields) -> float:
            t0 = time.perf_counter()
            pipe.generate(GenerationRequest(PROMPT, seed=3, **fields), progress=False)
            return time.perf_counter() - t0

        fresh = load_pipeline(device="cpu")
        never = timed(lambda: fresh.generate(GenerationRequest(PROMPT, seed=3), progress=False), args.runs)
        first_lora = run(loras=[Lora(str(a), 0.8)]) - run()
        lora, plain, switch, after = [], [], [], []
        for _ in range(args.runs):
            plain.append(run())
            lora.append(run(loras=[Lora(str(a), 0.8)]))
            switch.append(run(loras=[Lora(str(b), 0.8)]))
            after.append(run())
        first_cn = run(controls=[Control("canny", str(scene), controlnet=str(shipped))]) - run()
        cn = [run(controls=[Control("canny", str(scene), controlnet=str(shipped))]) for _ in range(args.runs)]
        med = statistics.median
        rows += [
            ("LoRA, first use (read + inject + generate) − plain, s", f"{first_lora:+.3f}"),
            ("LoRA, later use − plain, s", f"{med(lora) - med(plain):+.3f}"),
            ("switch LoRA a → b − plain, s", f"{med(switch) - med(plain):+.3f}"),
            ("plain after LoRA requests / plain on a pipeline that never saw one", f"{med(after) / med(never):.3f}"),
            ("ControlNet canny, first use − plain, s", f"{first_cn:+.3f}"),
            ("ControlNet canny, later use − plain, s (includes its residuals each step)",
             f"{med(cn) - med(plain):+.3f}"),
            ("plain, warm pipeline, s/image", f"{med(plain):.3f}"),
        ]
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} thread(s), {args.runs} runs")
    print("| measurement | value |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
