"""Ours vs diffusers' KolorsPipeline on full-size random-weight Kolors, same GPU, same process.

Usage (GPU machine, repo root):  PYTHONPATH=src python benchmarks/bench_generate.py [--runs 5] [--load-time]

Timer scope for both pipelines: prompt text -> decoded PIL image, warm process, after one warm-up, median
of --runs runs (interleaved). Both pipelines share the very same module objects, so weights and kernels
are identical; what differs is the code around them. Prints a markdown table last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from full_size import build_full_size, count_parameters  # noqa: E402

from kolors import Text2ImagePipeline  # noqa: E402
from kolors.diffusion.prompt import encode_prompts  # noqa: E402

PROMPT = "一张瓢虫的照片，微距，变焦，高质量，电影，拿着一个牌子，写着“可图”"


def timed(fn, runs: int) -> tuple[float, object]:
    """Median seconds of ``runs`` calls of ``fn`` (GPU-synchronised) and the last result."""
    times, out = [], None
    for _ in range(runs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def peak_gib(fn) -> tuple[float, float]:
    """(max allocated, max reserved) GiB during one call of ``fn``."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--load-time", action="store_true", help="also write the model to disk and time cold loads")
    args = ap.parse_args()

    from diffusers import KolorsPipeline
    import diffusers
    import transformers

    work = Path(tempfile.mkdtemp(prefix="kolors-bench-"))
    t0 = time.perf_counter()
    comps = build_full_size(work)
    build_s = time.perf_counter() - t0
    ours = Text2ImagePipeline(comps, device=torch.device("cuda"), dtype=torch.float16, model_name="random-full")
    ref = KolorsPipeline(vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer,
                         unet=comps.unet, scheduler=comps.scheduler)
    ref.set_progress_bar_config(disable=True)
    kw = dict(width=args.size, height=args.size, steps=args.steps, guidance=5.0)

    def run_ours(seed=0):
        return ours(PROMPT, seed=seed, progress=False, **kw)

    def run_ref(seed=0):
        return ref(PROMPT, num_inference_steps=args.steps, guidance_scale=5.0, width=args.size, height=args.size,
                   generator=torch.Generator("cpu").manual_seed(seed)).images

    run_ours(), run_ref()  # warm-up
    t_ours, t_ref = [], []
    for _ in range(args.runs):  # interleaved so drift hits both
        t_ours.append(timed(run_ours, 1)[0])
        t_ref.append(timed(run_ref, 1)[0])
    s_ours, s_ref = statistics.median(t_ours), statistics.median(t_ref)
    img_ours = np.asarray(run_ours(seed=1).images[0]) / 255.0
    img_ref = np.asarray(run_ref(seed=1)[0]) / 255.0
    mem_ours = peak_gib(run_ours)
    mem_ref = peak_gib(run_ref)

    # components
    lat = torch.randn(2, 4, args.size // 8, args.size // 8, device="cuda", dtype=torch.float16)
    ctx = torch.randn(2, 256, 4096, device="cuda", dtype=torch.float16)
    added = {"text_embeds": torch.randn(2, 4096, device="cuda", dtype=torch.float16),
             "time_ids": torch.tensor([[args.size, args.size, 0, 0, args.size, args.size]] * 2,
                                      device="cuda", dtype=torch.float16)}
    with torch.no_grad():
        unet_step = lambda: comps.unet(lat, 500, encoder_hidden_states=ctx, added_cond_kwargs=added)  # noqa: E731
        timed(unet_step, 3)
        s_unet, _ = timed(unet_step, 10)
        enc_ours = lambda: encode_prompts(comps.tokenizer, comps.text_encoder, [PROMPT, ""], device=ours.device)  # noqa
        enc_ref = lambda: ref.encode_prompt(PROMPT, device=ours.device, do_classifier_free_guidance=True)  # noqa
        timed(enc_ours, 2), timed(enc_ref, 2)
        s_enc_ours, _ = timed(enc_ours, 10)
        s_enc_ref, _ = timed(enc_ref, 10)
        one_lat = lat[:1] * 0.5
        s_vae_ours, _ = timed(lambda: ours._decode(one_lat), 5)

    rows = [
        ("device", torch.cuda.get_device_name(), ""),
        ("torch / diffusers / transformers", f"{torch.__version__} / {diffusers.__version__} / {transformers.__version__}", ""),
        ("UNet / text encoder params (M)", f"{count_parameters(comps.unet)/1e6:.0f} / {count_parameters(comps.text_encoder)/1e6:.0f}", ""),
        ("random full-size build on GPU (s)", f"{build_s:.1f}", ""),
        (f"s/image {args.size}², {args.steps} steps, cfg 5 (median of {args.runs})", f"ours {s_ours:.3f}",
         f"diffusers {s_ref:.3f}  ratio {s_ref / s_ours:.3f}x"),
        ("UNet step, batch 2 (ms, shared module)", f"{s_unet * 1e3:.1f}", ""),
        ("text encoding, prompt + negative (ms)", f"ours {s_enc_ours * 1e3:.1f}", f"diffusers {s_enc_ref * 1e3:.1f}"),
        ("VAE decode incl. fp32 upcast (ms)", f"{s_vae_ours * 1e3:.1f}", ""),
        ("peak GiB allocated / reserved", f"ours {mem_ours[0]:.2f} / {mem_ours[1]:.2f}",
         f"diffusers {mem_ref[0]:.2f} / {mem_ref[1]:.2f}"),
        ("same seed: max |Δpixel| (of 255), PSNR", f"{np.abs(img_ours - img_ref).max() * 255:.0f}",
         f"{psnr(img_ours, img_ref):.1f} dB"),
    ]
    print_table(rows)
    if args.load_time:
        rows += load_times(comps, work)
        print_table(rows)


def print_table(rows: list[tuple[str, str, str]]) -> None:
    """The results as a markdown table (and as JSON under $OUT when set)."""
    print("\n| what | value | baseline / note |\n| --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |", flush=True)
    out = os.environ.get("OUT")
    if out:
        Path(out, "bench_generate.json").write_text(json.dumps(rows, indent=1))


def load_times(comps, work: Path) -> list[tuple[str, str, str]]:
    """Write the model in the diffusers layout (fp16 variant), then time a cold-process load of each pipeline."""
    from diffusers import KolorsPipeline

    folder = work / "model"
    ref = KolorsPipeline(vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer,
                         unet=comps.unet, scheduler=comps.scheduler)
    t0 = time.perf_counter()
    ref.save_pretrained(folder, variant="fp16", safe_serialization=True)
    save_s = time.perf_counter() - t0
    snippets = {
        "ours": "from kolors import load_pipeline; p = load_pipeline(%r, device='cuda', dtype='float16')",
        "diffusers": "import torch; from diffusers import KolorsPipeline; "
                     "p = KolorsPipeline.from_pretrained(%r, variant='fp16', torch_dtype=torch.float16).to('cuda')",
    }
    result = {}
    for name, code in snippets.items():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", (code % str(folder)) + "; import torch; torch.cuda.synchronize()"],
                       check=True)
        result[name] = time.perf_counter() - t0
    return [
        ("write model, diffusers layout fp16 (s)", f"{save_s:.1f}", "page cache warm for the loads below"),
        ("cold process: imports + load to GPU (s)", f"ours {result['ours']:.1f}",
         f"diffusers {result['diffusers']:.1f}"),
    ]


if __name__ == "__main__":
    main()
