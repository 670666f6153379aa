"""Each run mode against diffusers' KolorsPipeline, same GPU, same process: one command per mode.

Usage (GPU machine, repo root; diffusers and torchao wheels installed):
    PYTHONPATH=src python benchmarks/bench_modes.py exact      [--runs 5] [--steps 50] [--size 1024]
    PYTHONPATH=src python benchmarks/bench_modes.py low-memory  # and: sequential, fast, cold-start, batch
    python benchmarks/bench_modes.py exact --model DIR --device cpu --steps 2 --runs 1   # smoke test anywhere

Without --model, full-size random-weight Kolors is built on the GPU in fp16 and written once in the diffusers
layout (fp16 variant) under --work; both pipelines then load that folder. Timer scope for every figure: prompt
text -> decoded image in a warm process, after warm-up, median of --runs runs (interleaved with the baseline);
compile/warm-up time reported apart. Memory: peak torch.cuda.max_memory_reserved, text encoding included.
Prints a Markdown table last (also written to $OUT/bench_modes_<mode>.json when $OUT is set).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from full_size import build_full_size  # noqa: E402

from kolors.evaluation.image_metrics import psnr, ssim  # noqa: E402
from kolors.pipelines.legacy import Text2ImagePipeline  # noqa: E402

PROMPT = "一张瓢虫的照片，微距，变焦，高质量，电影，拿着一个牌子，写着“可图”"
Row = tuple[str, str, str]


class Bench:
    """Shared settings, timers and the results table of one benchmark command."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.cuda = self.device.type == "cuda"
        self.rows: list[Row] = []

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def seconds(self, fn) -> float:
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0

    def interleaved(self, fns: dict[str, object]) -> dict[str, float]:
        """Median seconds of each function over --runs rounds, the functions taking turns (drift hits all)."""
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(self.args.runs):
            for k, fn in fns.items():
                times[k].append(self.seconds(fn))
        return {k: statistics.median(v) for k, v in times.items()}

    def peak_gib(self, fn) -> float:
        """Peak reserved GiB during one call of ``fn`` (nan off CUDA)."""
        if not self.cuda:
            fn()
            return float("nan")
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        fn()
        self.sync()
        return torch.cuda.max_memory_reserved() / 2**30

    def ours(self, folder: Path, **kwargs) -> Text2ImagePipeline:
        return Text2ImagePipeline.from_pretrained(folder, device=self.device, dtype=self.dtype, **kwargs)

    def generate(self, pipe: Text2ImagePipeline, seed: int = 0, **kwargs) -> np.ndarray:
        a = self.args
        kw = {"width": a.size, "height": a.size, "steps": a.steps, "guidance": 5.0, **kwargs}
        return pipe(PROMPT, seed=seed, progress=False, **kw).pixels[0]

    def diffusers(self, folder: Path):
        """diffusers' KolorsPipeline on ``folder`` (its own copy of the weights, loaded as diffusers does)."""
        from diffusers import KolorsPipeline

        variant = "fp16" if any((folder / "unet").glob("*.fp16.*")) else None
        ref = KolorsPipeline.from_pretrained(folder, variant=variant, torch_dtype=self.dtype)
        ref.to(self.device)
        ref.set_progress_bar_config(disable=True)
        return ref

    def reference(self, ref, seed: int = 0, steps: int | None = None) -> np.ndarray:
        a = self.args
        out = ref(PROMPT, num_inference_steps=steps or a.steps, guidance_scale=5.0, width=a.size, height=a.size,
                  generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
        return out[0]

    def add(self, what: str, value: str, note: str = "") -> None:
        self.rows.append((what, value, note))

    def table(self, mode: str) -> None:
        import diffusers

        head = [("device", torch.cuda.get_device_name() if self.cuda else "cpu", ""),
                ("torch / diffusers", f"{torch.__version__} / {diffusers.__version__}", ""),
                ("settings", f"{self.args.size}², {self.args.steps} steps, guidance 5, median of {self.args.runs}",
                 "")]
        print(f"\n### bench_modes.py {mode}\n\n| what | value | baseline / note |\n| --- | --- | --- |")
        for r in head + self.rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} |", flush=True)
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], f"bench_modes_{mode}.json").write_text(json.dumps(head + self.rows, indent=1))


def free() -> None:
    """Return the memory of objects just deleted to the device."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def unet_flops(pipe: Text2ImagePipeline, size: int) -> float:
    """FLOPs of one UNet call at batch 2 (guidance), counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        pipe.components.unet(*unet_inputs(pipe, size))
    return float(counter.get_total_flops())


def unet_inputs(pipe: Text2ImagePipeline, size: int) -> tuple:
    """Random UNet inputs of a guided 1-image step at ``size`` (batch 2, 256 tokens)."""
    c, dev, dt = pipe.components.unet.config, pipe.device, pipe.dtype
    lat = torch.randn(2, c.in_channels, size // pipe.vae_scale_factor, size // pipe.vae_scale_factor, device=dev,
                      dtype=dt)
    ctx = torch.randn(2, 256, c.encoder_hid_dim, device=dev, dtype=dt)
    pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
    added = {"text_embeds": torch.randn(2, pooled, device=dev, dtype=dt),
             "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, device=dev, dtype=dt)}
    return lat, torch.tensor(500, device=dev), ctx, None, None, None, None, added


def gemm_tflops(bench: Bench, n: int = 8192) -> float:
    """Dense fp16 matmul rate of this device (a large square GEMM), for the UNet's achieved fraction."""
    a = torch.randn(n, n, device=bench.device, dtype=bench.dtype)
    b = torch.randn(n, n, device=bench.device, dtype=bench.dtype)
    for _ in range(3):
        a @ b
    t = statistics.median(bench.seconds(lambda: a @ b) for _ in range(10))
    return 2 * n**3 / t / 1e12


# -- one function per mode ----------------------------------------------------------------------------------------

def bench_exact(b: Bench, folder: Path) -> None:
    """Ours (eager, then exact + compile) vs diffusers eager and diffusers with torch.compile(reduce-overhead)."""
    ours = b.ours(folder)
    peak = b.peak_gib(lambda: b.generate(ours))
    eager_img = b.generate(ours, seed=1)
    flops = unet_flops(ours, b.args.size)
    ref = b.diffusers(folder)
    ref_img = b.reference(ref, seed=1)
    t = b.interleaved({"ours": lambda: b.generate(ours), "diffusers": lambda: b.reference(ref)})

    b.add("s/image, diffusers eager", f"{t['diffusers']:.3f}", "baseline")
    b.add("s/image, ours eager", f"{t['ours']:.3f}", f"{t['diffusers'] / t['ours']:.2f}x diffusers eager")
    b.add("ours eager vs diffusers, same seed: PSNR", f"{psnr(eager_img, ref_img):.1f} dB", "")
    b.add("peak GiB reserved, ours eager (alone on the GPU)", f"{peak:.2f}", "")
    if not b.cuda:
        b.add("compiled rows", "skipped", "the exact speed-ups apply on CUDA only")
        return
    ours.settings = dataclasses.replace(ours.settings, compile=True)
    ours._unet_prepared = False
    warm = b.seconds(lambda: b.generate(ours))  # compiles
    b.generate(ours)
    compiled_img = b.generate(ours, seed=1)
    ref.unet = torch.compile(ref.unet, mode="reduce-overhead", fullgraph=True)
    warm_ref = b.seconds(lambda: b.reference(ref))
    b.reference(ref)
    tc = b.interleaved({"ours": lambda: b.generate(ours), "diffusers": lambda: b.reference(ref)})
    step = _unet_step_seconds(b, ours)
    gemm = gemm_tflops(b)

    b.add("s/image, diffusers + torch.compile(reduce-overhead)", f"{tc['diffusers']:.3f}",
          f"compile + warm-up {warm_ref:.0f} s")
    b.add("s/image, ours exact + --compile", f"{tc['ours']:.3f}",
          f"{t['diffusers'] / tc['ours']:.2f}x diffusers eager, {tc['diffusers'] / tc['ours']:.2f}x compiled "
          f"diffusers (targets 2x, 1.3x); compile + warm-up {warm:.0f} s")
    b.add("ours compiled vs ours eager: PSNR / SSIM", f"{psnr(compiled_img, eager_img):.1f} dB / "
          f"{ssim(compiled_img, eager_img):.4f}", "target ≥ 40 dB")
    b.add("UNet step, batch 2, compiled (ms)", f"{step * 1e3:.1f}",
          f"{flops / 1e12:.1f} TFLOP -> {flops / step / 1e12:.0f} TFLOP/s = {flops / step / 1e12 / gemm:.0%} of a "
          f"{gemm:.0f} TFLOP/s GEMM")


def bench_fast(b: Bench, folder: Path) -> None:
    """Ours fast mode (fp8 where supported, compile, DPM++ 2M at half the steps) vs diffusers eager."""
    exact = b.ours(folder)
    exact_imgs = [b.generate(exact, seed=s) for s in range(3)]
    del exact
    free()
    fast = b.ours(folder, mode="fast")
    fp8 = _fp8_layer_errors(b, folder) if b.cuda else "n/a (CPU)"
    steps = fast.settings.default_steps(b.args.steps)
    warm = b.seconds(lambda: b.generate(fast, steps=steps, scheduler=None))
    fast_imgs = [b.generate(fast, seed=s, steps=steps, scheduler=None) for s in range(3)]
    ref = b.diffusers(folder)
    t = b.interleaved({"fast": lambda: b.generate(fast, steps=steps, scheduler=None),
                       "diffusers": lambda: b.reference(ref)})
    b.add("s/image, diffusers eager", f"{t['diffusers']:.3f}", f"{b.args.steps} steps Euler")
    b.add("s/image, ours fast", f"{t['fast']:.3f}", f"{t['diffusers'] / t['fast']:.2f}x (target 4x); {steps} steps "
          f"{fast.settings.scheduler}; compile + warm-up {warm:.0f} s")
    b.add("fast vs exact, random weights: PSNR / SSIM (3 seeds)",
          f"{statistics.median(psnr(x, y) for x, y in zip(fast_imgs, exact_imgs)):.1f} dB / "
          f"{statistics.mean(ssim(x, y) for x, y in zip(fast_imgs, exact_imgs)):.3f}",
          "quality is judged on the built-in model: benchmarks/embedded_modes.py")
    b.add("fp8 layers: relative output error, median / max", fp8, "")


def bench_low_memory(b: Bench, folder: Path, mode: str) -> None:
    """Peak memory and time of low-memory/sequential mode against exact mode (and diffusers' model offload)."""
    exact = b.ours(folder)
    b.generate(exact)
    t_exact = b.interleaved({"exact": lambda: b.generate(exact)})["exact"]
    peak_exact = b.peak_gib(lambda: b.generate(exact))
    exact_img = b.generate(exact, seed=1)
    del exact
    free()
    t0 = time.perf_counter()
    lean = b.ours(folder, mode=mode)
    load = time.perf_counter() - t0
    b.generate(lean)
    t_lean = b.interleaved({"lean": lambda: b.generate(lean)})["lean"]
    peak = b.peak_gib(lambda: b.generate(lean))
    img = b.generate(lean, seed=1)
    budget = {"low-memory": 8, "sequential": 4}[mode]
    b.add("s/image, exact", f"{t_exact:.3f}", f"peak {peak_exact:.2f} GiB reserved")
    b.add(f"s/image, {mode}", f"{t_lean:.3f}", f"{t_lean / t_exact:.2f}x exact (low-memory target ≤ 1.5x)")
    b.add(f"peak GiB reserved, {mode} (text encoding included)", f"{peak:.2f}", f"target ≤ {budget} GiB")
    b.add(f"{mode} vs exact, same seed: PSNR / SSIM", f"{psnr(img, exact_img):.1f} dB / {ssim(img, exact_img):.4f}",
          f"text encoder {lean.settings.text_encoder_quant}, VAE tiling {lean.settings.vae_tiling}")
    b.add(f"load {mode} (s)", f"{load:.1f}", "page cache warm")


def bench_cold_start(b: Bench, folder: Path) -> None:
    """Process start -> first denoising step, twice (the second finds the compile cache warm)."""
    code = (
        "import time; t0 = time.perf_counter(); import torch; from kolors import Text2ImagePipeline as P\n"
        f"p = P.from_pretrained({str(folder)!r}, device={b.args.device!r}, compile={b.args.compile})\n"
        "t_load = time.perf_counter() - t0\n"
        "from tqdm.auto import tqdm\n"
        "class Bar(tqdm):\n"
        "    def update(self, n=1):\n"
        "        if not hasattr(Bar, 'first'):\n"
        "            torch.cuda.synchronize() if torch.cuda.is_available() else None; Bar.first = time.perf_counter() - t0\n"
        "        return super().update(n)\n"
        "import kolors.pipelines.pipeline as m; m.tqdm = Bar\n"
        f"p('a', steps=2, width={b.args.size}, height={b.args.size}, seed=0, progress=False)\n"
        "print('RESULT', t_load, Bar.first)\n"
    )
    for attempt in ("first process", "second process"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        load, first = map(float, out.split("RESULT")[1].split())
        b.add(f"{attempt}: start -> loaded / -> first step done (s)", f"{load:.1f} / {first:.1f}",
              f"compile {b.args.compile}; page cache warm (folder just written)")


def bench_batch(b: Bench, folder: Path) -> None:
    """Images per second at batch 1, 2, 4 (exact mode)."""
    ours = b.ours(folder)
    for n in (1, 2, 4):
        fn = lambda n=n: ours(PROMPT, seed=0, num_images=n, width=b.args.size, height=b.args.size,  # noqa: E731
                               steps=b.args.steps, progress=False)
        fn()
        s = b.interleaved({"x": fn})["x"]
        b.add(f"batch {n}", f"{n / s:.3f} images/s", f"{s / n:.3f} s/image")


def _unet_step_seconds(b: Bench, pipe: Text2ImagePipeline) -> float:
    unet, inputs = pipe.components.unet, unet_inputs(pipe, b.args.size)
    with torch.no_grad():
        call = lambda: unet(*inputs)  # noqa: E731
        for _ in range(3):
            call()
        return statistics.median(b.seconds(call) for _ in range(20))


def _fp8_layer_errors(b: Bench, folder: Path) -> str:
    """Relative error of every fp8 layer's output against fp16, on token-shaped random inputs (batch 2, 1024²)."""
    from kolors.loading.components import load_unet
    from kolors.performance.quantize import fp8_supported, quantize_unet_fp8

    if not fp8_supported(b.device):
        return "n/a (no fp8 tensor cores)"
    import copy

    unet = load_unet(folder / "unet", b.device, torch.bfloat16, variant="fp16")
    linears = dict(unet.named_modules())
    originals = {n: copy.deepcopy(m) for n, m in linears.items() if isinstance(m, torch.nn.Linear)}
    names = quantize_unet_fp8(unet)
    errors = []
    tokens = 2 * (b.args.size // 16) ** 2
    with torch.no_grad():
        for name in names:
            x = torch.randn(tokens, originals[name].in_features, device=b.device, dtype=torch.bfloat16)
            want = originals[name](x).float()
            got = linears[name](x).float()
            errors.append(((got - want).norm() / want.norm()).item())
    del unet, originals, linears
    free()
    return f"{statistics.median(errors):.4f} / {max(errors):.4f} over {len(errors)} layers"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("exact", "fast", "low-memory", "sequential", "cold-start", "batch"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--model", type=Path, help="an existing Kolors folder (default: build full-size random weights)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--work", type=Path, default=Path("/tmp/kolors-bench"))
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True, help="cold-start: compile")
    args = ap.parse_args()
    b = Bench(args)
    folder = args.model or write_full_size(args.work)
    {"exact": bench_exact, "fast": bench_fast, "cold-start": bench_cold_start, "batch": bench_batch,
     "low-memory": lambda b, f: bench_low_memory(b, f, "low-memory"),
     "sequential": lambda b, f: bench_low_memory(b, f, "sequential")}[args.mode](b, folder)
    b.table(args.mode)


def write_full_size(work: Path) -> Path:
    """Full-size random Kolors written once in the diffusers layout (fp16 variant); reused by later commands."""
    folder = work / "kolors-random-full"
    if (folder / "model_index.json").is_file():
        return folder
    from diffusers import KolorsPipeline

    comps = build_full_size(work)
    pipe = KolorsPipeline(vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer,
                          unet=comps.unet, scheduler=comps.scheduler)
    t0 = time.perf_counter()
    pipe.save_pretrained(folder, variant="fp16", safe_serialization=True)
    print(f"wrote {folder} in {time.perf_counter() - t0:.0f} s", flush=True)
    del pipe, comps
    free()
    return folder


if __name__ == "__main__":
    main()
