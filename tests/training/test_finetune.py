"""`kolors train` end to end on a tiny model: loss goes down, checkpoints resume exactly after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.shape_images import write_shapes
from kolors.cli.main import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def one_thread():
    """Single-threaded torch, as in the subprocesses, so that in-process and subprocess runs agree bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _args(model: Path, data: Path, output: Path, *extra: str) -> list[str]:
    return ["train", "--model", str(model), "--data", str(data), "--output", str(output), "--quiet", *extra]


def test_lora_run_lowers_loss_and_writes_checkpoints(train_model, shapes_metadata, tmp_path):
    out = tmp_path / "run"
    code = main(_args(train_model, shapes_metadata, out, "--mode", "lora", "--steps", "24", "--batch-size", "2",
                      "--lr", "2e-3", "--rank", "4", "--set", "checkpoint_every=8", "--set", "keep_checkpoints=2"))
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    print(f"evaluation loss {summary['initial_loss']:.4f} -> {summary['final_loss']:.4f}")
    assert summary["final_loss"] < 0.9 * summary["initial_loss"], summary
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 25))
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step-16", "step-24"]
    assert {p.name for p in (out / "checkpoints" / "step-16").iterdir()} >= {
        "lora_0.safetensors", "optimizer.bin", "scheduler.bin", "trainer_state.json"}
    assert (out / "pytorch_lora_weights.safetensors").is_file() and (out / "config.yaml").is_file()
    # the same --output again without --resume would mix two runs' checkpoints
    assert main(_args(train_model, shapes_metadata, out, "--steps", "2")) == 2


def test_resume_after_kill_matches_uninterrupted_run(train_model, shapes_txt, tmp_path, one_thread):
    steps = 40
    options = ["--mode", "full", "--steps", str(steps), "--batch-size", "2", "--lr", "1e-3",
               "--set", "gradient_accumulation=2", "--set", "ema=true", "--set", "ema_decay=0.9",
               "--set", "checkpoint_every=4", "--set", "keep_checkpoints=null"]
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    assert main(_args(train_model, shapes_txt, straight, *options)) == 0

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, "-m", "kolors", *_args(train_model, shapes_txt, crashed, *options)],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (crashed / "checkpoints" / "step-8").is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    print("killed after", sorted(p.name for p in (crashed / "checkpoints").iterdir()))
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert not (crashed / "unet").exists()

    assert main(_args(train_model, shapes_txt, crashed, *options, "--resume", "latest")) == 0
    for name in ("unet/diffusion_pytorch_model.safetensors", f"checkpoints/step-{steps}/model.safetensors"):
        a, b = load_file(straight / name), load_file(crashed / name)  # EMA result, live weights
        assert a.keys() == b.keys()
        diff = max((a[k] - b[k]).abs().max().item() for k in a)
        print(f"{name}: max |resumed - uninterrupted| = {diff:.3g}")
        assert diff <= 1e-6, (name, diff)
    log = [json.loads(line)["step"] for line in (crashed / "train_log.jsonl").read_text().splitlines()]
    assert log == list(range(1, steps + 1))


def test_unreadable_image_is_a_one_line_error(train_model, tmp_path, capsys):
    data = write_shapes(tmp_path / "data", 4, "metadata")
    (data / "002.png").write_bytes(b"\x89PNG broken")
    code = main(_args(train_model, data, tmp_path / "out", "--steps", "2"))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("kolors: error: cannot read image ") and "002.png" in err and err.count("\n") == 1


def test_bad_config_is_a_one_line_error(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("mode: lora\nlearning_rate: 1e-4\n")
    assert main(["train", "--config", str(config), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"kolors: error: {config}: unknown key 'learning_rate'\n" or (
        str(config) in err and "learning_rate" in err and err.count("\n") == 1)


def test_full_finetune_with_8bit_adam(train_model, shapes_metadata, tmp_path):
    pytest.importorskip("bitsandbytes")
    out = tmp_path / "run"
    code = main(_args(train_model, shapes_metadata, out, "--mode", "full", "--steps", "16", "--batch-size", "2",
                      "--lr", "1e-3", "--set", "use_8bit_adam=true", "--set", "checkpoint_every=16"))
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_loss"] < summary["initial_loss"], summary
    state = torch.load(out / "checkpoints" / "step-16" / "optimizer.bin", weights_only=False)["state"]
    # bitsandbytes keeps its state in a nested dict when saved
    states = [s.get("__bnb_optimizer_quant_state__", s) for s in state.values()]
    dtypes = {v.dtype for s in states for k, v in s.items() if k in ("state1", "state2")}
    assert torch.uint8 in dtypes  # the moments of the large tensors are kept in 8 bits
