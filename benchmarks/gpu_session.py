"""What the parts of gpu_all.py share: the deadline, the results file, the model built once, timers.

Every figure goes through :class:`Results`, which appends it to ``gpu_all.jsonl`` and rewrites ``gpu_all.md`` at
once, so whatever stops the run (a timeout, a crash of the device) the finished rows are already on disk.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from full_size import build_full_size, write_folder

PROMPT = "一张瓢虫的照片，微距，变焦，高质量，电影，拿着一个牌子，写着“可图”"
GUIDANCE = 5.0


class OutOfTime(Exception):
    """The global deadline leaves too little time for the next measurement."""


class Clock:
    """Seconds left until the run's deadline."""

    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.deadline = self.start + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def need(self, seconds: float, what: str) -> None:
        """Raise :class:`OutOfTime` unless about ``seconds`` are left for ``what``."""
        if self.left() < seconds:
            raise OutOfTime(f"{what} needs about {seconds:.0f} s, {max(self.left(), 0):.0f} s left")


class Results:
    """Rows of (part, what, value, note, status), written to ``out`` as JSON lines and Markdown as they come."""

    def __init__(self, out: Path, header: dict[str, str], titles: dict[str, str], clock: Clock) -> None:
        self.out, self.header, self.titles, self.clock = out, header, titles, clock
        out.mkdir(parents=True, exist_ok=True)
        self.jsonl, self.md = out / "gpu_all.jsonl", out / "gpu_all.md"
        self.rows: list[dict[str, Any]] = []
        self.jsonl.write_text(json.dumps({"header": header}, ensure_ascii=False) + "\n")
        self._write_markdown()

    def add(self, part: str, what: str, value: Any, note: str = "", status: str = "ok", **data: Any) -> None:
        """Record one figure (``status``: ok, skipped, error or deadline; ``data``: extra JSON fields)."""
        row = {"part": part, "what": what, "value": value, "note": note, "status": status,
               "t": round(self.clock.elapsed(), 1), **data}
        self.rows.append(row)
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._write_markdown()
        flag = "" if status == "ok" else f" [{status}]"
        print(f"[{row['t']:6.1f} s] part {part}{flag}: {what} = {value}  {note}", flush=True)

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        return counts

    def _write_markdown(self) -> None:
        lines = ["# benchmarks/gpu_all.py", "", "| | |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in self.header.items()]
        for part, title in self.titles.items():
            rows = [r for r in self.rows if r["part"] == part]
            if not rows:
                continue
            lines += ["", f"## Part {part}: {title}", "", "| what | value | note |", "| --- | --- | --- |"]
            for r in rows:
                value = r["value"]
                if r["status"] != "ok":
                    value = f"**{r['status']}**" + ("" if value == r["status"] else f": {value}")
                lines.append(f"| {r['what']} | {value} | {r['note']} |")
            for r in rows:
                if r.get("traceback"):
                    lines += ["", f"Traceback ({r['what']}):", "", "```", r["traceback"].rstrip(), "```"]
        tmp = self.md.with_suffix(".md.tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.md)


class Session:
    """Settings, the random model (built once, written once) and the measurements parts hand to each other."""

    def __init__(self, args, clock: Clock, results: Results) -> None:
        self.args, self.clock, self.results = args, clock, results
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.dtype = torch.float16 if self.cuda else torch.float32
        self.scale = "tiny" if args.smoke else "full"
        self.shared: dict[str, Any] = {}  # figures one part measured and a later one compares against
        self._built = None
        self._folder: Path | None = None
        self._diffusers = None

    # -- the model -----------------------------------------------------------------------------------------------

    def built(self):
        """The random components on the device (rebuilt, identically seeded, after :meth:`release`)."""
        if self._built is None:
            seconds, self._built = self.seconds(
                lambda: build_full_size(self.args.work, str(self.device), self.dtype, self.scale))
            if "build" not in self.shared:
                self.shared["build"] = seconds
                self.results.add("0", f"random {self.scale}-size build on {self.device.type}", f"{seconds:.1f} s")
        return self._built

    def folder(self) -> Path:
        """The built model written once as a diffusers-layout folder (what every pipeline of ours loads)."""
        if self._folder is None:
            folder = self.args.work / f"kolors-random-{self.scale}"
            done = folder / ".written-by-gpu_all"  # a rerun on the same machine reuses a complete folder
            if done.is_file():
                self.results.add("0", "model folder", "reused", f"{folder}, written by an earlier run")
            else:
                seconds = write_folder(self.built(), folder)
                size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
                done.write_text("complete\n")
                self.results.add("0", "write the model folder (diffusers layout)", f"{seconds:.1f} s",
                                 f"{size / 1e9:.2f} GB; the page cache holds it from here on")
            self._folder = folder
        return self._folder

    def load(self, part: str, label: str, **kwargs):
        """``kolors.load_pipeline`` on the folder with ``kwargs`` (mode=..., compile=...), its load time recorded."""
        import kolors

        folder = self.folder()
        seconds, pipe = self.seconds(
            lambda: kolors.load_pipeline(folder, device=self.device, dtype=self.dtype, **kwargs))
        self.results.add(part, f"load {label} (s)", f"{seconds:.1f}", "page cache warm")
        return pipe

    def diffusers(self):
        """diffusers' KolorsPipeline over the built modules (the baseline; weights identical to the folder's)."""
        if self._diffusers is None:
            from diffusers import KolorsPipeline

            c = self.built()
            self._diffusers = KolorsPipeline(vae=c.vae, text_encoder=c.text_encoder, tokenizer=c.tokenizer,
                                             unet=c.unet, scheduler=c.scheduler)
            self._diffusers.set_progress_bar_config(disable=True)
        return self._diffusers

    def release(self) -> None:
        """Drop every model this session holds and give their memory back (compiled graphs included)."""
        self._built = self._diffusers = None
        torch._dynamo.reset()  # compiled code holds its modules and CUDA-graph memory pools
        free()

    # -- running -------------------------------------------------------------------------------------------------

    def generate(self, pipe, seed: int = 0, **kwargs) -> np.ndarray:
        """One image of ours (pixels in [0, 1]); ``kwargs`` override the size/steps/guidance of this run."""
        return self.call(pipe, seed=seed, **kwargs).pixels[0]

    def call(self, pipe, seed: int = 0, **kwargs):
        """``pipe(PROMPT, ...)`` with this run's size, steps and guidance unless ``kwargs`` say otherwise."""
        a = self.args
        kw = {"width": a.size, "height": a.size, "steps": a.steps, "guidance": GUIDANCE, **kwargs}
        return pipe(PROMPT, seed=seed, progress=False, **kw)

    def reference(self, ref, seed: int = 0) -> np.ndarray:
        """One image of diffusers' pipeline with the same settings and noise as :meth:`generate`."""
        a = self.args
        out = ref(PROMPT, num_inference_steps=a.steps, guidance_scale=GUIDANCE, width=a.size, height=a.size,
                  generator=torch.Generator("cpu").manual_seed(seed), output_type="np")
        return out.images[0]

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def seconds(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        """Wall seconds of one call of ``fn`` (device work included) and its result."""
        self.sync()
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - t0, out

    def runs(self, fns: dict[str, Callable[[], Any]], what: str) -> tuple[dict[str, float], dict[str, Any], int]:
        """Median seconds of each function over up to ``--runs`` rounds, taking turns (drift hits all alike).

        Stops early when another round would not finish before the deadline (one round always runs); returns
        the medians, each function's last result and the rounds done.
        """
        times: dict[str, list[float]] = {k: [] for k in fns}
        last: dict[str, Any] = {}
        for i in range(self.args.runs):
            if i and self.clock.left() < 1.5 * sum(v[-1] for v in times.values()):
                print(f"{what}: {i} round(s) only, the deadline is near", flush=True)
                break
            for k, fn in fns.items():
                seconds, last[k] = self.seconds(fn)
                times[k].append(seconds)
        done = len(next(iter(times.values())))
        return {k: statistics.median(v) for k, v in times.items()}, last, done

    def peak_gib(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        """Peak ``torch.cuda.max_memory_reserved`` GiB during one call of ``fn`` (nan off CUDA), and its result."""
        if not self.cuda:
            return float("nan"), fn()
        free()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        self.sync()
        return torch.cuda.max_memory_reserved() / 2**30, out

    def need(self, gpu_seconds: float, what: str) -> None:
        """:meth:`Clock.need` with a duration estimated for the full-size model on a GPU (none for --smoke)."""
        self.clock.need(gpu_seconds if not self.args.smoke else 0, what)

    def skip(self, part: str, what: str, reason: str) -> None:
        self.results.add(part, what, "skipped", reason, status="skipped")

    def guarded(self, part: str, what: str, fn: Callable[[], Any]) -> None:
        """Run one measurement of a part; a failure (traceback included) or the deadline is recorded, and the part
        goes on to its next measurement."""
        try:
            fn()
        except OutOfTime as exc:
            self.results.add(part, what, "not finished", str(exc), status="deadline")
        except Exception as exc:  # noqa: BLE001 - any failure is a result to report, not a reason to stop
            self.results.add(part, what, f"failed: {describe(exc)}", status="error",
                             traceback=traceback.format_exc())
        free()


def free() -> None:
    """Give the memory of dropped objects back to the device, compiled graphs and their CUDA-graph pools too."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def describe(exc: BaseException) -> str:
    """The exception's type and first line (a cuBLAS or out-of-memory message is usually all in it)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def gib(x: float) -> str:
    return "n/a (CPU)" if x != x else f"{x:.2f}"
