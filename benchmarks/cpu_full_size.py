"""Full-size Kolors on a CPU machine: load a written folder in bf16 (optionally int8 text encoder), time a step.

On a CPU without bf16 matmul instructions kolors keeps the weights in bf16 and computes each layer in fp32
(kolors.performance.cpu); the table says which compute dtype ran.

Usage (repo root, installed venv; about 18 GB of RAM and 20 GB of disk):
    .venv/bin/python benchmarks/cpu_full_size.py [--size 512] [--steps 2] [--text-encoder-quant int8]

Step 1 (a child process) builds full-size random-weight Kolors in bf16, one component at a time, and writes it in
the diffusers layout under --work (skipped when already there). Step 2 (a fresh child process) loads that folder with kolors' loader onto
the CPU in bf16 — every shard read and assigned in place, no fp32 copy — and generates one image, reporting the
load time, peak resident memory, text-encoding time and seconds per denoising step. Prints a Markdown table last.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

BUILD = """
import gc, json, shutil, sys, time, torch
from pathlib import Path
sys.path.insert(0, {here!r})
from full_size import CHATGLM3_CONFIG, SCHEDULER_CONFIG, UNET_CONFIG, VAE_CONFIG, small_tokenizer
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from kolors.models.chatglm import ChatGLMConfig, ChatGLMModel, init_chatglm_weights
folder = Path({folder!r}); t0 = time.perf_counter()
folder.mkdir(parents=True, exist_ok=True)
shutil.copy(Path({index!r}), folder / "model_index.json")
small_tokenizer(folder / "tokenizer")
EulerDiscreteScheduler(**SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
torch.set_default_dtype(torch.bfloat16)
torch.manual_seed(0)
for name, make in (("vae", lambda: AutoencoderKL.from_config(VAE_CONFIG)),
                   ("unet", lambda: UNet2DConditionModel.from_config(UNET_CONFIG))):
    model = make().to(torch.bfloat16)
    model.save_pretrained(folder / name, max_shard_size="2GB")
    del model; gc.collect()
text_encoder = ChatGLMModel(ChatGLMConfig(**CHATGLM3_CONFIG), empty_init=False)  # one component at a time:
init_chatglm_weights(text_encoder)                                                # 12.5 GB at the most
text_encoder.save_pretrained(folder / "text_encoder", max_shard_size="2GB")
print("BUILT", time.perf_counter() - t0)
"""

RUN = """
import json, resource, time
t0 = time.perf_counter()
import torch
torch.set_num_threads({threads})
from kolors import Text2ImagePipeline
import kolors.pipelines.pipeline as m
from kolors.diffusion import prompt as prompt_module
pipe = Text2ImagePipeline.from_pretrained({folder!r}, device="cpu", dtype="bfloat16",
                                          text_encoder_quant={quant!r})
load = time.perf_counter() - t0
rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
marks = []
class Bar(m.tqdm):
    def update(self, n=1):
        marks.append(time.perf_counter())
        return super().update(n)
m.tqdm = Bar
encode = prompt_module.encode_prompts
def timed_encode(*a, **k):
    t = time.perf_counter(); out = encode(*a, **k); marks.append(("encode", time.perf_counter() - t)); return out
m.encode_prompts = timed_encode
t1 = time.perf_counter()
pipe("一张瓢虫的照片，微距，变焦，高质量", seed=0, steps={steps}, width={size}, height={size}, progress=False)
total = time.perf_counter() - t1
steps = [x for x in marks if not isinstance(x, tuple)]
enc = sum(x[1] for x in marks if isinstance(x, tuple))
per_step = (steps[-1] - steps[0]) / (len(steps) - 1) if len(steps) > 1 else float("nan")
print("RESULT", json.dumps(dict(load=load, rss_load=rss_load, compute=str(pipe.dtype),
      rss_peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, encode=enc, per_step=per_step,
      total=total)))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--text-encoder-quant", default="none", choices=("none", "int8", "int4"))
    p.add_argument("--work", type=Path, default=Path("/tmp/kolors-cpu-full"))
    args = p.parse_args()
    folder = args.work / "model"
    rows = []
    if not (folder / "model_index.json").is_file():
        index = HERE.parent / "src" / "kolors" / "embedded" / "kolors-shapes-small" / "model_index.json"
        out = subprocess.run([sys.executable, "-c", BUILD.format(here=str(HERE), folder=str(folder),
                                                                  index=str(index))],
                             check=True, capture_output=True, text=True).stdout
        rows.append(("build + write full-size bf16 folder (s)", f"{float(out.split('BUILT')[1]):.0f}"))
    size_gb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e9
    out = subprocess.run([sys.executable, "-c", RUN.format(folder=str(folder), quant=args.text_encoder_quant,
                                                            steps=args.steps, size=args.size, threads=args.threads)],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out.split("RESULT", 1)[1])
    rows += [
        ("machine", f"{platform.machine()}, {args.threads} threads, {_mem_gib():.0f} GiB RAM"),
        ("folder on disk (GB, bf16 safetensors)", f"{size_gb:.1f}"),
        ("text encoder", f"bf16 + {args.text_encoder_quant} weights" if args.text_encoder_quant != "none"
         else "bf16"),
        ("compute dtype", r["compute"].removeprefix("torch.")),
        ("process start -> loaded (s)", f"{r['load']:.1f}"),
        ("peak resident memory after load / after generating (GiB)", f"{r['rss_load']:.1f} / {r['rss_peak']:.1f}"),
        ("text encoding, prompt + negative (s)", f"{r['encode']:.1f}"),
        (f"denoising step, {args.size}², guidance 5 (batch 2) (s)", f"{r['per_step']:.1f}"),
        (f"whole call, {args.steps} steps incl. VAE decode (s)", f"{r['total']:.1f}"),
    ]
    print("\n| what | value |\n| --- | --- |")
    for k, v in rows:
        print(f"| {k} | {v} |")


def _mem_gib() -> float:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) / 2**20


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
