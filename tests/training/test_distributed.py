"""Multi-process training through `accelerate launch` (slow: run with ``pytest -m slow tests/training``).

Two CPU processes with batch B each must give the weights of one process with batch 2B: the batches, noise and
timesteps of every row depend only on the seed, the step and the row's place in the global batch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
STEPS, LR = 8, 1e-3

pytestmark = pytest.mark.slow


TWO_CPU_PROCESSES = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                     "--mixed_precision", "no", "--dynamo_backend", "no"]
CPU = {"ACCELERATE_USE_CPU": "true"}


def _train(model: Path, data: Path, out: Path, batch: int, launcher: list[str], env: dict | None = None,
           *extra: str, mode: str = "full") -> dict:
    module = [] if launcher[-1].endswith(".py") else ["-m", "kolors"]
    command = [*launcher, *module, "train", "--model", str(model), "--data", str(data), "--output", str(out),
               "--mode", mode, "--steps", str(STEPS), "--batch-size", str(batch), "--lr", str(LR), "--quiet",
               "--set", "checkpoint_every=4", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", **(env or {})}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def _max_diff(a: Path, b: Path, weights: str = "unet/diffusion_pytorch_model.safetensors") -> float:
    x, y = load_file(a / weights), load_file(b / weights)
    assert x.keys() == y.keys()
    return max((x[k] - y[k]).abs().max().item() for k in x)


def test_two_cpu_processes_match_one(train_model, shapes_metadata, tmp_path):
    one = _train(train_model, shapes_metadata, tmp_path / "one", 4, [sys.executable])
    # accelerate 1.15 launches several CPU processes only with mpirun under --cpu; torchrun-style launching
    # (--multi_gpu) with ACCELERATE_USE_CPU gives the same MULTI_CPU (gloo) setup on a machine without GPUs.
    two = _train(train_model, shapes_metadata, tmp_path / "two", 2, TWO_CPU_PROCESSES, CPU)
    assert {p.name for p in (tmp_path / "two/checkpoints/step-4").iterdir()} >= {"random_states_1.pkl"}
    diff = _max_diff(tmp_path / "one", tmp_path / "two")
    print(f"max |2 processes - 1 process| = {diff:.3g}; eval loss {one['final_loss']:.6f} vs {two['final_loss']:.6f}")
    # Adam divides by sqrt(v): parameters with near-zero gradients turn float rounding into differences of a
    # small fraction of the step size (lr).
    assert diff < 0.2 * LR
    assert abs(one["final_loss"] - two["final_loss"]) < 1e-5 * one["final_loss"]


def test_fsdp_two_cpu_processes_match_one_and_resume(train_model, shapes_metadata, tmp_path):
    fsdp = [ACCELERATE, "launch", "--config_file", str(REPO / "configs/accelerate/fsdp.yaml"), "--num_processes", "2",
            "--mixed_precision", "no", str(Path(__file__).with_name("fsdp_cpu_launch.py"))]
    one = _train(train_model, shapes_metadata, tmp_path / "one", 4, [sys.executable])
    two = _train(train_model, shapes_metadata, tmp_path / "fsdp", 2, fsdp, CPU)
    step4 = tmp_path / "fsdp/checkpoints/step-4"
    assert len(list((step4 / "pytorch_model_fsdp_0").glob("*.distcp"))) == 2  # one shard per process
    diff = _max_diff(tmp_path / "one", tmp_path / "fsdp")
    print(f"FSDP: max |2 processes - 1 process| = {diff:.3g}; eval loss {one['final_loss']:.7f} vs "
          f"{two['final_loss']:.7f}")
    assert diff < 0.2 * LR
    assert abs(one["final_loss"] - two["final_loss"]) < 1e-5 * one["final_loss"]

    # resume from the sharded step-4 checkpoint: the same weights as the uninterrupted FSDP run
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(step4, resumed / "checkpoints/step-4")
    _train(train_model, shapes_metadata, resumed, 2, fsdp, CPU, "--resume", "latest")
    diff = _max_diff(tmp_path / "fsdp", resumed)
    print(f"FSDP resume: max |resumed - uninterrupted| = {diff:.3g}")
    assert diff <= 1e-6


def test_controlnet_training_in_two_cpu_processes_matches_one(train_model, shapes_control, tmp_path):
    from kolors.training.controlnet_model import WEIGHTS_FILE

    light = ["--set", "controlnet_blocks=light", "--set", "caption_dropout=0"]
    one = _train(train_model, shapes_control, tmp_path / "one", 4, [sys.executable], None, *light, mode="controlnet")
    two = _train(train_model, shapes_control, tmp_path / "two", 2, TWO_CPU_PROCESSES, CPU, *light, mode="controlnet")
    diff = _max_diff(tmp_path / "one", tmp_path / "two", f"controlnet/{WEIGHTS_FILE}")
    print(f"ControlNet: max |2 processes - 1 process| = {diff:.3g}; eval loss {one['final_loss']:.7f} vs "
          f"{two['final_loss']:.7f}")
    assert one["final_loss"] != one["initial_loss"]  # it trained
    assert diff < 0.2 * LR
    assert abs(one["final_loss"] - two["final_loss"]) < 1e-5 * one["final_loss"]
