"""`kolors train` checks everything that needs no weights before it creates anything, and blames the right place."""

from __future__ import annotations

import pytest
import torch

from kolors.cli.main import main


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "shapes"
    assert main(["data", "shapes", str(folder), "-n", "2", "--size", "32", "-q"]) == 0
    return folder


def setup(tmp, shapes):
    (tmp / "empty").mkdir()
    (tmp / "a-file").write_text("x")
    (tmp / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (tmp / "bad-lr.yaml").write_text("lr: .inf\n")
    (tmp / "fine.yaml").write_text("lr: 1.0e-4\nsteps: 2\n")
    return {"data": str(shapes), "tmp": str(tmp)}


CASES = [
    (["--data", "{tmp}/empty"], "no images found in"),
    (["--data", "{tmp}/missing"], "training data folder not found"),
    (["--data", "{data}", "-o", "{tmp}/run", "--resume", "latest"], "--resume latest: no checkpoint in"),
    (["--data", "{data}", "-o", "{tmp}/a-file"], "a-file is a file"),
    (["--data", "{data}", "-o", "{tmp}/a-file/run"], "a-file is a file"),
    (["--data", "{data}", "-o", "{tmp}"], "which kolors train did not write"),
    (["--data", "{data}", "--config", "{tmp}/binary.yaml"], "is not a text file (not UTF-8)"),
    (["--data", "{data}", "--config", "{tmp}"], "is a folder"),
    (["--data", "{data}", "--model", "{tmp}/no-model"], "model folder not found"),
    (["--data", "{data}", "--lr", "inf"], "argument --lr: expected a finite number, got 'inf'"),
    (["--data", "{data}", "--lr", "nan"], "argument --lr: expected a finite number, got 'nan'"),
    (["--data", "{data}", "--lr", "-1"], "kolors: error: --lr must be positive, got -1.0"),
    (["--data", "{data}", "--set", "lr=inf"], "--set lr=inf: 'lr' must be a finite number, got inf"),
    (["--data", "{data}", "--config", "{tmp}/fine.yaml", "--set", "lr=abc"], "--set lr=abc: 'lr' must be float"),
    (["--data", "{data}", "--config", "{tmp}/fine.yaml", "--steps", "0"], "argument --steps: must be a positive"),
    (["--data", "{data}", "--config", "{tmp}/bad-lr.yaml"], "bad-lr.yaml: 'lr' must be a finite number, got inf"),
    (["--config", "{tmp}/fine.yaml"], "fine.yaml: 'data' is required"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_mistakes_are_one_line_before_anything_is_created(tmp_path, shapes, capsys, monkeypatch, argv, message):
    values = setup(tmp_path, shapes)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    extra = [] if "--steps" in argv else ["--steps", "2"]
    code = main(["train", *(a.format(**values) for a in argv), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("kolors: error: ") and len(err.splitlines()) == 1, err
    assert message in err, err  # names the option that gave the value, not the YAML file
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder, config.yaml or cache


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_fp16_on_a_cpu_is_refused_before_caching(tmp_path, shapes, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--data", str(shapes), "-o", str(tmp_path / "run"), "--mixed-precision", "fp16",
                 "--set", "cache_latents=true", "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "mixed_precision fp16 needs a GPU" in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_the_lora_config_takes_resolution_and_precision_from_the_model_and_machine(tmp_path, shapes, capsys):
    """configs/train/lora.yaml with the built-in model: 128 px latents (16x16) in fp32 on a CPU, not 1024 px bf16."""
    from pathlib import Path

    import yaml
    from safetensors.torch import load_file

    config = Path(__file__).resolve().parents[2] / "configs" / "train" / "lora.yaml"
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--data", str(shapes), "-o", str(run), "--steps", "1",
                 "--set", "sample_every=0", "-q"]) == 0, capsys.readouterr().err
    assert yaml.safe_load((run / "config.yaml").read_text())["mixed_precision"] == "no"
    latents = [load_file(str(p))["mean"] for p in (run / "cache").rglob("*.safetensors") if "latents" in str(p)]
    assert latents and {tuple(t.shape) for t in latents} == {(4, 16, 16)}
