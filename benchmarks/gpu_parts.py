"""The measurements of gpu_all.py, one function per part, in issue 17's priority order.

Each part records its rows as soon as it has them and uses only the public entry points (``kolors.load_pipeline``
with a run mode, the pipeline call, ``pipe.components``); diffusers' ``KolorsPipeline`` runs over the very modules
the folder was written from. On a CPU (``--smoke``) every part runs the same code at toy sizes; the CUDA-only
levers (torch.compile, fp8, moving weights to a device, page-cache control) are skipped with the reason recorded.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gpu_session import OutOfTime, Session, free, gib
from gpu_unet import (gemm_tflops, layer_errors, linear_rows, per_row_fp8_each_layer, spread, step_seconds,
                      unet_flops, unet_inputs)
from kolors.evaluation.image_metrics import psnr, ssim

# Seconds a step needs on an H100/H200 at full size, so that nothing starts that would outlast the deadline.
COMPILE_S = 170  # compiling the full UNet and recording its CUDA graphs: 114-159 s on an H100 (ANCHORS.md)
LEAN_MODE_S = {"low-memory": 60, "sequential": 90}  # load, warm-up and three images, weights moved each time
RECIPE_MODULES = ("kolors.recipe", "kolors.training.embedded")  # the built-in model's recipe, newest name first
BENCH_TRAINING = Path(__file__).resolve().parent / "bench_training.py"


def run_until_deadline(s: Session, cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` stopped a few seconds before the deadline (then :class:`OutOfTime`)."""
    try:
        return subprocess.run(cmd, timeout=max(s.clock.left() - 5, 1), check=False, **kwargs)
    except subprocess.TimeoutExpired:
        raise OutOfTime(f"{what} was stopped at the deadline") from None


def rate(s: Session, what: str, flops: float, seconds: float, gemm: float, note: str = "") -> None:
    s.results.add("1", what, f"{seconds * 1e3:.1f}",
                  f"{flops / seconds / 1e12:.1f} TFLOP/s = {flops / seconds / 1e12 / gemm:.0%} of the GEMM{note}")


# -- shared figures: measured by part 1, or here when part 1 did not run -------------------------------------------

def exact_reference(s: Session, part: str) -> tuple[np.ndarray, float]:
    """Our exact eager image (seed 0) and its s/image."""
    if "exact_image" not in s.shared:
        pipe = s.load(part, "ours, exact mode (reference for this part)")
        s.generate(pipe)
        t, img, n = s.runs({"ours": lambda: s.generate(pipe)}, "exact reference")
        s.shared.update(exact_s=t["ours"], exact_image=img["ours"])
        s.results.add(part, "s/image, ours exact eager (reference)", f"{t['ours']:.3f}", f"median of {n}")
    return s.shared["exact_image"], s.shared["exact_s"]


def diffusers_eager_seconds(s: Session, part: str) -> float:
    if "diffusers_eager_s" not in s.shared:
        ref = s.diffusers()
        s.reference(ref)
        t, _, n = s.runs({"diffusers": lambda: s.reference(ref)}, "diffusers eager")
        s.shared["diffusers_eager_s"] = t["diffusers"]
        s.results.add(part, "s/image, diffusers eager (reference)", f"{t['diffusers']:.3f}", f"median of {n}")
    return s.shared["diffusers_eager_s"]


def similarity(a: np.ndarray, b: np.ndarray) -> str:
    return f"{psnr(a, b):.1f} dB / {ssim(a, b):.4f}"


# -- 1. exact mode against diffusers, eager and compiled -----------------------------------------------------------

def part_exact(s: Session) -> None:
    ref = s.diffusers()
    _eager(s, ref)
    free()
    s.guarded("1", "compiled diffusers", lambda: _diffusers_compiled(s, ref))
    s.guarded("1", "compiled ours", lambda: _ours_compiled(s))


def _eager(s: Session, ref) -> None:
    """Ours and diffusers eager, interleaved; then the UNet's FLOPs and eager step against the GEMM rate."""
    P, add = "1", s.results.add
    ours = s.load(P, "ours, exact mode")
    first_ours, _ = s.seconds(lambda: s.generate(ours))
    first_ref, _ = s.seconds(lambda: s.reference(ref))
    t, img, n = s.runs({"ours": lambda: s.generate(ours), "diffusers": lambda: s.reference(ref)}, "eager images")
    s.shared.update(exact_s=t["ours"], exact_image=img["ours"], diffusers_eager_s=t["diffusers"])
    add(P, "s/image, diffusers eager", f"{t['diffusers']:.3f}", f"median of {n}; first call {first_ref:.1f} s")
    add(P, "s/image, ours exact eager", f"{t['ours']:.3f}",
        f"{t['diffusers'] / t['ours']:.2f}x diffusers eager; median of {n}; first call {first_ours:.1f} s")
    add(P, "ours eager vs diffusers eager, same seed: PSNR / SSIM", similarity(img["ours"], img["diffusers"]), "")

    inputs = unet_inputs(ours.components, s.args.size)
    flops = unet_flops(ours.components.unet, inputs)
    n_gemm, gemm = gemm_tflops(s)
    s.shared["unet_flops"], s.shared["gemm"] = flops, gemm
    add(P, f"GEMM {n_gemm}³ {str(s.dtype).split('.')[-1]} (TFLOP/s)", f"{gemm:.1f}", "median of 10")
    add(P, "UNet FLOPs per step (batch 2, 256 tokens)", f"{flops / 1e12:.3f} TFLOP", "torch FlopCounterMode")
    rate(s, "UNet step, eager, batch 2 (ms)", flops, step_seconds(s, ours.components.unet, inputs), gemm)


def _compile_note(s: Session) -> str:
    return "" if s.cuda else "; CPU: not compiled (torch.compile is a CUDA-only lever here), the same code runs eager"


def _diffusers_compiled(s: Session, ref) -> None:
    s.need(COMPILE_S, "compiling diffusers' UNet")
    if s.cuda:
        ref.unet = torch.compile(ref.unet, mode="reduce-overhead", fullgraph=True)
    first, _ = s.seconds(lambda: s.reference(ref))  # compiles
    second, _ = s.seconds(lambda: s.reference(ref))  # records the CUDA graphs
    t, img, n = s.runs({"diffusers": lambda: s.reference(ref)}, "compiled diffusers images")
    s.shared["diffusers_compiled_s"] = t["diffusers"]
    s.results.add("1", 'diffusers + torch.compile(mode="reduce-overhead", fullgraph=True): s/image',
                  f"{t['diffusers']:.3f}", f"median of {n}; compile (first call) {first:.0f} s, second call "
                  f"{second:.1f} s; PSNR vs ours eager {psnr(img['diffusers'], s.shared['exact_image']):.1f} dB"
                  + _compile_note(s))


def _ours_compiled(s: Session) -> None:
    P, add = "1", s.results.add
    s.need(COMPILE_S, "compiling our UNet")
    pipe = s.load(P, "ours, exact mode + compile", compile=True)
    first, _ = s.seconds(lambda: s.generate(pipe))
    second, _ = s.seconds(lambda: s.generate(pipe))
    t, img, n = s.runs({"ours": lambda: s.generate(pipe)}, "compiled images")
    s.shared["compiled_ours"] = True
    eager, compiled = s.shared["diffusers_eager_s"], s.shared.get("diffusers_compiled_s")
    vs_compiled = f", {compiled / t['ours']:.2f}x compiled diffusers (target 1.3x)" if compiled else ""
    add(P, "ours exact + compile: s/image", f"{t['ours']:.3f}",
        f"{eager / t['ours']:.2f}x diffusers eager (target 2x){vs_compiled}; median of {n}; compile (first call) "
        f"{first:.0f} s, second call {second:.1f} s" + _compile_note(s))
    add(P, "ours compiled vs ours eager, same seed: PSNR / SSIM", similarity(img["ours"], s.shared["exact_image"]),
        "target ≥ 40 dB")
    inputs = unet_inputs(pipe.components, s.args.size)
    try:
        with torch.compiler.set_stance("fail_on_recompile"):  # a new graph would cost minutes: measure or skip
            seconds = step_seconds(s, pipe.components.unet, inputs)
    except Exception as exc:  # noqa: BLE001 - recompiling is reported, not done
        s.skip(P, "UNet step, ours compiled (ms)", f"the timing call would recompile ({str(exc)[:200]}); "
               f"s/image ÷ steps = {t['ours'] / s.args.steps * 1e3:.1f} ms is an upper bound")
        return
    rate(s, "UNet step, ours compiled, batch 2 (ms)", s.shared["unet_flops"], seconds, s.shared["gemm"],
         _compile_note(s))


# -- 2. low-memory and sequential modes ----------------------------------------------------------------------------

def part_memory(s: Session) -> None:
    exact_img, exact_s = exact_reference(s, "2")
    s.release()  # nothing else on the device: the peaks below are the mode's own
    for mode, budget in (("low-memory", 8), ("sequential", 4)):
        s.guarded("2", f"{mode} mode", lambda mode=mode, budget=budget: _lean_mode(s, mode, budget, exact_img,
                                                                                   exact_s))


class TextEncoderProbe:
    """Where ChatGLM's first linear weight is (and of which type) while ChatGLM runs and, once ``armed`` (right
    before a call that resets the peak statistics), the memory peak by the end of that call's text encoding.
    With model offload the whole module is on the device inside its forward."""

    def __init__(self, text_encoder: torch.nn.Module, cuda: bool) -> None:
        self.layer = next(m for m in text_encoder.modules() if isinstance(m, torch.nn.Linear))
        self.cuda, self.seen, self.peak, self.armed = cuda, set(), float("nan"), False
        self.handle = text_encoder.register_forward_hook(self._after)

    def _after(self, *_) -> None:
        w = self.layer.weight
        self.seen.add(f"{type(w).__name__} on {w.device.type}")
        if self.armed and self.cuda:
            self.peak = torch.cuda.max_memory_reserved() / 2**30  # the negative prompt's pass comes last

    def at_rest(self) -> str:
        w = self.layer.weight
        return f"{type(w).__name__} on {w.device.type}"


def _lean_mode(s: Session, mode: str, budget: float, exact_img: np.ndarray, exact_s: float) -> None:
    P, add = "2", s.results.add
    s.need(LEAN_MODE_S[mode], f"{mode} mode")
    pipe = s.load(P, f"{mode} mode", mode=mode)
    probe = TextEncoderProbe(pipe.components.text_encoder, s.cuda)
    loaded = probe.at_rest()
    first, _ = s.seconds(lambda: s.generate(pipe))
    probe.armed = True
    peak, img = s.peak_gib(lambda: s.generate(pipe))
    probe.armed = False
    t, _, n = s.runs({mode: lambda: s.generate(pipe)}, f"{mode} images")
    add(P, f"{mode}: peak GiB reserved, one image, text encoding included", gib(peak),
        f"target ≤ {budget} GiB; by the end of text encoding {gib(probe.peak)} GiB")
    add(P, f"{mode}: s/image", f"{t[mode]:.3f}",
        f"{t[mode] / exact_s:.2f}x exact eager" + (" (target ≤ 1.5x)" if mode == "low-memory" else "")
        + f"; median of {n}; first call {first:.1f} s")
    add(P, f"{mode} vs exact eager, same seed: PSNR / SSIM", similarity(img, exact_img), "")
    where = f"after load: {loaded}; during encoding: {', '.join(sorted(probe.seen))}; after: {probe.at_rest()}"
    if mode != "low-memory":  # streamed layer by layer: each layer is on the device only inside its own call
        add(P, f"{mode}: text encoder weights", "streamed", where)
    elif not s.cuda:
        s.skip(P, "low-memory: int8 text encoder moved to the device for encoding and back",
               f"CPU run: nothing moves ({where})")
    else:
        moved = loaded.endswith("cpu") and probe.at_rest().endswith("cpu") and any(
            x.endswith(s.device.type) for x in probe.seen)
        add(P, "low-memory: int8 text encoder moved to the device for encoding and back", "yes" if moved else "no",
            where)
    probe.handle.remove()


# -- 3. fast mode and its fp8 layers -------------------------------------------------------------------------------

def part_fast(s: Session) -> None:
    exact_img, _ = exact_reference(s, "3")
    eager = diffusers_eager_seconds(s, "3")
    s.release()
    s.guarded("3", "fast mode", lambda: _fast_mode(s, exact_img, eager))
    s.guarded("3", "fp8 layers", lambda: _fp8_layers(s))


def _fast_mode(s: Session, exact_img: np.ndarray, diffusers_eager: float) -> None:
    P, add = "3", s.results.add
    s.need(COMPILE_S, "fast mode (compiles the UNet)")
    pipe = s.load(P, "fast mode", mode="fast")
    fp8 = sum("Float8" in type(m.weight).__name__ for m in pipe.components.unet.modules()
              if isinstance(m, torch.nn.Linear))
    first, result = s.seconds(lambda: s.call(pipe, steps=None))  # the mode's own steps and sampler
    second, _ = s.seconds(lambda: s.generate(pipe, steps=None))
    t, img, n = s.runs({"fast": lambda: s.generate(pipe, steps=None)}, "fast images")
    params = result.parameters[0]
    add(P, "fast mode: s/image", f"{t['fast']:.3f}",
        f"{diffusers_eager / t['fast']:.2f}x diffusers eager (target 4x); {params['steps']} steps "
        f"{params['scheduler']}; {fp8} fp8 layers; median of {n}; first call (compile) {first:.0f} s, second "
        f"{second:.1f} s" + _compile_note(s))
    add(P, "fast vs exact eager, same seed: PSNR / SSIM", similarity(img["fast"], exact_img),
        "random weights: quality is judged on the built-in model (benchmarks/embedded_modes.py)")


def _fp8_layers(s: Session) -> None:
    """fast mode's fp8 layers one by one against fp16, and the per-row fp8 of every linear layer (the cuBLAS
    NOT_SUPPORTED seen once, ANCHORS.md): which layers fail, with how many rows."""
    from kolors.performance.quantize import fp8_supported, quantize_unet_fp8

    P = "3"
    unet = s.built().unet
    rows = linear_rows(unet, unet_inputs(s.built(), s.args.size))
    cuda_note = "" if fp8_supported(s.device) else f"fp8 needs CUDA compute capability ≥ 8.9 (this run: {s.device})"
    quantized = copy.deepcopy(unet)
    names = quantize_unet_fp8(quantized)
    if names:
        errors = layer_errors(unet, quantized, names, rows, unet.dtype)
        s.results.add(P, "fast mode's fp8 layers: relative error vs fp16, median / max", spread(errors),
                      f"{len(names)} layers, per-tensor scales (fp16 weights), random inputs of each layer's rows")
    else:
        s.skip(P, "fast mode's fp8 layers", cuda_note or "quantize_unet_fp8 converted no layer (see the log)")
    del quantized
    free()
    bf16 = copy.deepcopy(unet).to(torch.bfloat16)
    errors, failures = per_row_fp8_each_layer(bf16, rows)
    summary = f"{len(errors)} of {len(rows)} linear layers ran"
    if failures:
        shown = "; ".join(f"{name} ({rows[name]} rows): {err}" for name, err in list(failures.items())[:3])
        summary += f"; {len(failures)} failed, e.g. {shown}"
    value = spread(list(errors.values())) if errors else "none ran"
    if cuda_note:
        s.skip(P, "per-row fp8 (bf16) on every linear layer", f"{cuda_note}; {summary}")
    else:
        s.results.add(P, "per-row fp8 (bf16) on every linear layer: error median / max", value, summary,
                      failed_layers={k: [rows[k], v] for k, v in failures.items()})


# -- 4. throughput by batch size, cold start -----------------------------------------------------------------------

def part_batch(s: Session) -> None:
    s.guarded("4", "batch throughput", lambda: _batch(s))
    s.guarded("4", "cold start", lambda: _cold_start(s))


def _batch(s: Session) -> None:
    P = "4"
    pipe = s.load(P, "ours, exact mode")
    per_image = {}
    for n in s.args.batches:
        s.need(20 * n, f"batch {n}")
        fn = lambda n=n: s.call(pipe, num_images=n)  # noqa: E731
        s.seconds(fn)
        t, _, k = s.runs({"batch": fn}, f"batch {n}")
        per_image[n] = t["batch"] / n
        s.results.add(P, f"batch {n}: images/s", f"{n / t['batch']:.3f}", f"{per_image[n]:.3f} s/image; median of {k}")
    better = all(per_image[b] < per_image[a] for a, b in zip(s.args.batches, s.args.batches[1:]))
    s.results.add(P, "s/image falls with each larger batch", "yes" if better else "no",
                  ", ".join(f"{n}: {v:.3f}" for n, v in per_image.items()))


COLD_START = """
import json, sys, time
import torch, kolors
folder, device, dtype, size, compile_ = sys.argv[1:]
pipe = kolors.load_pipeline(folder, device=device, dtype=dtype, compile=compile_ == "1")
loaded = time.time()
pipe("a", steps=1, width=int(size), height=int(size), seed=0, progress=False)
torch.cuda.synchronize() if torch.cuda.is_available() else None
print("COLD-START " + json.dumps({"loaded": loaded, "image": time.time()}))
"""


def _cold_start(s: Session) -> None:
    folder = s.folder()
    s.release()
    _start_process(s, folder, "page cache warm (folder written earlier in this run)", compile_=False)
    if s.args.drop_page_cache:
        try:
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        except OSError as exc:
            s.skip("4", "cold start, page cache dropped", f"could not drop the page cache: {exc}")
        else:
            _start_process(s, folder, "page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches)",
                           compile_=False)
    else:
        s.skip("4", "cold start, page cache dropped", "not asked for (--drop-page-cache)")
    if not s.shared.get("compiled_ours") or not s.cuda:
        s.skip("4", "cold start with --compile", "needs part 1's compiled UNet in the kernel cache (CUDA, this run)")
        return
    s.need(90, "a compiled cold start")
    _start_process(s, folder, "page cache warm; compile with part 1's kernels in $KOLORS_CACHE", compile_=True)


def _start_process(s: Session, folder: Path, state: str, *, compile_: bool) -> None:
    """A fresh process: start -> ``load_pipeline`` done -> a 1-step image decoded (the first step's time)."""
    dtype = str(s.dtype).split(".")[-1]
    cmd = [sys.executable, "-c", COLD_START, str(folder), s.device.type, dtype, str(s.args.size), str(int(compile_))]
    s.need(40, f"a cold start, {state}")
    t0 = time.time()
    out = run_until_deadline(s, cmd, f"the cold-start process ({state})", capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"cold-start process exited {out.returncode}: {out.stderr.strip()[-600:]}")
    stamps = json.loads(out.stdout.split("COLD-START ")[-1])
    s.results.add("4", f"cold start{' + compile' if compile_ else ''}: start -> loaded / -> 1-step image (s)",
                  f"{stamps['loaded'] - t0:.1f} / {stamps['image'] - t0:.1f}",
                  f"target ≤ 15 s to the first step; {state}; the image includes one VAE decode")


# -- 5. training memory and speed ----------------------------------------------------------------------------------

def part_training(s: Session) -> None:
    folder = s.folder()
    s.release()  # the training process needs the device to itself
    for mode, batch in (("lora", 4), ("full", 2)):
        s.guarded("5", f"{mode} training", lambda mode=mode, batch=batch: _train(s, folder, mode, batch))


def _train(s: Session, folder: Path, mode: str, batch: int) -> None:
    a = s.args
    work = a.work / "training"
    rows_file = work / f"{mode}.json"
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(BENCH_TRAINING), mode, "--model", str(folder), "--work", str(work),
           "--size", str(a.train_size), "--batch", str(batch), "--json", str(rows_file)]
    if a.train_steps:
        cmd += ["--steps", str(a.train_steps)]
    s.need(60, f"{mode} training")
    try:
        out = run_until_deadline(s, cmd, f"{mode} training", capture_output=True, text=True)
    finally:
        for run in work.glob(f"train-{mode}-*"):  # the trained weights (gigabytes for a full UNet)
            shutil.rmtree(run, ignore_errors=True)
    if out.returncode:
        raise RuntimeError(f"bench_training.py exited {out.returncode}: {out.stderr.strip()[-600:]}")
    for what, value in json.loads(rows_file.read_text()):
        s.results.add("5", f"{mode}: {what}", value, "")


# -- 6. the built-in model's recipe from scratch -------------------------------------------------------------------

def recipe_command(given: str | None) -> list[str]:
    """How to start the recipe: ``--recipe-cmd`` if given, else the first of RECIPE_MODULES that runs with -m."""
    if given:
        return shlex.split(given)
    for name in RECIPE_MODULES:
        try:
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.submodule_search_locations is not None:  # a package: needs __main__
                spec = importlib.util.find_spec(f"{name}.__main__")
        except ImportError:
            spec = None
        if spec is not None:
            return [sys.executable, "-m", name]
    raise RuntimeError(f"none of {', '.join(RECIPE_MODULES)} can be run with python -m: give --recipe-cmd")


def part_recipe(s: Session) -> None:
    P, a = "6", s.args
    s.release()
    margin = 40  # the recipe's exit, then this part's bookkeeping
    minutes = (s.clock.left() - margin) / 60
    if minutes < a.recipe_min_minutes:
        raise OutOfTime(f"the recipe needs at least {a.recipe_min_minutes} min, {minutes:.1f} left")
    out = a.work / "recipe" / "model"
    shutil.rmtree(out.parent, ignore_errors=True)
    cmd = recipe_command(a.recipe_cmd) + ["--out", str(out), "--device", s.device.type,
                                          "--time-budget-minutes", f"{minutes:.2f}"] + shlex.split(a.recipe_args)
    s.results.add(P, "command", " ".join(cmd[1:] if cmd[0] == sys.executable else cmd), f"budget {minutes:.1f} min")
    log = a.out / "recipe.log"
    t0 = time.monotonic()
    with log.open("w") as f:
        try:
            code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=max(s.clock.left() - 10, 1),
                                  check=False).returncode
        except subprocess.TimeoutExpired:
            code = "killed at the deadline"
    lines = log.read_text(errors="replace").splitlines()
    progress = [x for x in lines if "diffusion step" in x or "done in" in x]
    s.results.add(P, "exit / wall time", f"{code} / {time.monotonic() - t0:.0f} s",
                  progress[-1].strip() if progress else (lines[-1].strip() if lines else "no output"),
                  status="ok" if code == 0 else "error")
    result = Path(f"{out}.work") / "result.json"
    if result.is_file():
        summary = json.loads(result.read_text())
        info = summary.get("info", {})
        s.results.add(P, "result", info.get("status", "?"),
                      f"{info.get('steps_diffusion')} diffusion steps in {info.get('minutes', 0):.1f} min; "
                      f"held-out scores: {json.dumps(info.get('eval'), ensure_ascii=False)}",
                      info=info, eval=summary.get("eval"))
    if (out / "model_index.json").is_file():
        parts, digest = pack_folder(out, a.out / "recipe-model.tar")
        s.results.add(P, "model", " ".join(p.name for p in parts),
                      f"sha256 {digest[:16]}…; here: cat recipe-model.tar.* | tar -x (a folder 'model')", sha256=digest)
    else:
        s.results.add(P, "model", "not exported", "the recipe ended before writing its model", status="error")


CHUNK_BYTES = 15 * 2**20  # the device sends back files of at most 16 MiB


def pack_folder(folder: Path, stem: Path, chunk_bytes: int = CHUNK_BYTES) -> tuple[list[Path], str]:
    """``folder`` as a tar split into ``stem.00``, ``stem.01``, … of at most ``chunk_bytes`` each (the files the
    device returns have a size limit); the chunks and the whole tar's sha256. Pieces of an earlier pack under the
    same stem beyond this one's are removed, so that ``cat stem.*`` is this tar."""
    digest, parts = hashlib.sha256(), []
    with tempfile.TemporaryFile() as whole:  # nameless: never among the files that come back, nor over another
        with tarfile.open(fileobj=whole, mode="w") as tar:
            tar.add(folder, arcname=folder.name)
        whole.seek(0)
        while chunk := whole.read(chunk_bytes):
            digest.update(chunk)
            parts.append(stem.with_name(f"{stem.name}.{len(parts):02d}"))
            parts[-1].write_bytes(chunk)
    for stale in stem.parent.glob(f"{stem.name}.[0-9][0-9]"):  # a longer pack of an earlier run into this folder
        if stale not in parts:
            stale.unlink()
    return parts, digest.hexdigest()
