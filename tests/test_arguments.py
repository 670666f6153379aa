"""Usage errors of the ``python -m kolors.…`` tools are one line naming the tool and the problem, exit status 2,
as the ``kolors`` command's are (not argparse's usage block)."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("module, argv, problem", [
    ("kolors.recipe.run", ["--out", "x", "--foreground-from", "bogus"], "invalid choice: 'bogus'"),
    ("kolors.recipe.run", ["--out", "x", "--foreground-from", "prediction"], "give that too"),
    ("kolors.recipe.run", [], "the following arguments are required: --out"),
    ("kolors.recipe.average", ["--out"], "expected one argument"),
    ("kolors.recipe.average", ["a", "b", "--out", "c", "--weights", "1,x"], "argument --weights: expected a number"),
    ("kolors.recipe.average", ["a", "b", "--out", "c", "--weights", "nan,1"],  # used to average into NaN weights
     "argument --weights: expected a finite number, got 'nan'"),
    # a value that begins with a minus used to be read as an unknown option: "expected one argument"
    ("kolors.recipe.average", ["a", "b", "--out", "c", "--weights", "-1,2"], "argument --weights: must be 0 or more, got -1"),
    ("kolors.recipe.run", ["--out", "x", "--lr", "-1e-4"], "argument --lr: must be a positive number, got -1e-4"),
    ("kolors.evaluation.shapes_eval", ["--seeds", "two"], "argument --seeds: expected a whole number, got 'two'"),
    # a count or a category that selects nothing is refused before the model loads (it used to report 0 prompts)
    ("kolors.evaluation.shapes_eval", ["--category", "colour"],
     "argument --category: 'colour' is not a category of the composition prompts: choose from plain, background, "
     "position, count, pair"),
    ("kolors.evaluation.shapes_eval", ["--prompts", "colour-shape", "--category", "pair"],
     "choose from colour-shape"),
    ("kolors.evaluation.shapes_eval", ["--pairs", "0"], "argument --pairs: must be a positive integer, got 0"),
    ("kolors.evaluation.shapes_eval", ["--seeds", "0"], "argument --seeds: must be a positive integer, got 0"),
    ("kolors.evaluation.shapes_eval", ["--seeds", "300"], "argument --seeds: at most 256, got 300"),
    ("kolors.evaluation.control_eval", ["--no-such-option"], "unrecognized arguments: --no-such-option"),
    ("kolors.evaluation.control_eval", ["--first-pair", "9999"],
     "argument --first-pair: the held-out pairs are 0 to 251, got 9999"),
    ("kolors.evaluation.control_eval", ["--pairs", "-3"], "argument --pairs: must be a positive integer, got -3"),
    ("kolors.evaluation.word_probe", ["--timesteps", "3,x"], "expected comma-separated whole numbers"),
    ("kolors.evaluation.word_probe", ["--seed", "-1"], "argument --seed: must be 0 or more, got -1"),
])
def test_a_tools_usage_error_is_one_line(module, argv, problem, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    tool = "python -m " + module.removesuffix(".run")
    assert stop.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"{tool}: error: ") and problem in err and f"(see '{tool} --help')" in err, err


@pytest.mark.parametrize("module, argv, error", [
    ("kolors.recipe", ["--out", "m", "--binding-margin", "0"],
     "python -m kolors.recipe: error: argument --binding-margin: must be a positive number, got 0 "
     "(see 'python -m kolors.recipe --help')"),
    ("kolors.recipe.average", ["a", "b", "--out", "m"],  # its checks import diffusers (through the export)
     "python -m kolors.recipe.average: error: a does not exist: give the --out folder of a recipe run"),
    ("kolors.recipe.decoder", ["a", "--out", "m"],
     "python -m kolors.recipe.decoder: error: a does not exist: give the --out folder of a recipe run"),
])
def test_in_a_fresh_process_a_recipe_tools_error_is_the_only_line(module, argv, error, tmp_path):
    """The recipe's tools import torch and diffusers before they report; what libraries log while they import
    (torchao's and bitsandbytes' optional parts, torch's pytree notes) came before the error, three lines of it."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.splitlines() == [error], done.stderr


def test_the_kolors_commands_errors_keep_their_prefix(capsys):
    from kolors.cli.main import main

    assert main(["generate", "a cat", "--steps", "zero"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("kolors: error: ") and "(see 'kolors generate --help')" in err


@pytest.mark.parametrize("argv, extras, help_of", [
    (["data", "shapes", "out", "--count", "3"], "--count 3", "kolors data shapes"),
    (["train", "--bogus"], "--bogus", "kolors train"),
    (["generate", "a cat", "a dog"], "a dog", "kolors generate"),
])
def test_an_unknown_argument_names_the_help_of_the_subcommand_it_was_given_to(argv, extras, help_of, capsys):
    """argparse reports leftovers from the top parser ('kolors --help', which does not list them)."""
    from kolors.cli.main import main

    assert main(argv) == 2
    assert capsys.readouterr().err == f"kolors: error: unrecognized arguments: {extras} (see '{help_of} --help')\n"


def test_a_value_that_begins_with_a_minus_is_told_how_to_write_it(capsys):
    """"-blurry" after --negative-prompt looks like an option to argparse; the error says how to pass it."""
    from kolors.cli.main import main

    assert main(["generate", "a cat", "--negative-prompt", "-blurry"]) == 2
    err = capsys.readouterr().err
    assert "argument --negative-prompt: expected one argument (a value that begins with '-' is written " \
           "--negative-prompt=-…)" in err and len(err.splitlines()) == 1, err


def test_averaging_folders_that_are_not_models_is_one_line_before_anything_loads(tmp_path, capsys):
    from kolors.recipe.average import main

    (tmp_path / "notes").mkdir()
    assert main([str(tmp_path / "notes"), str(tmp_path / "absent"), "--out", str(tmp_path / "avg")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "notes is not a model folder the recipe exported (no model_index.json, " \
        "tokenizer/, unet/, text_encoder/): give the --out folder of a recipe run" in err, err
    assert not (tmp_path / "avg").exists()


@pytest.mark.parametrize("argv, problem", [
    (["--pool-size", "0"], "argument --pool-size: must be a positive integer, got 0"),
    (["--batch-size", "0"], "argument --batch-size: must be a positive integer, got 0"),
    (["--steps-diffusion", "0"], "argument --steps-diffusion: must be a positive integer, got 0"),
    (["--workers", "0"], "argument --workers: must be a positive integer, got 0"),
    (["--captions-per-language", "0"], "argument --captions-per-language: must be a positive integer, got 0"),
    (["--lr", "-1"], "argument --lr: must be a positive number, got -1"),
    (["--lr-text-encoder", "nan"], "argument --lr-text-encoder: expected a finite number, got 'nan'"),
    (["--time-budget-minutes", "0"], "argument --time-budget-minutes: must be a positive number, got 0"),
    (["--log-seconds", "-1"], "argument --log-seconds: must be 0 or more, got -1"),  # 0: every step
    (["--warmup-steps", "-5"], "argument --warmup-steps: must be 0 or more, got -5"),
    (["--caption-dropout", "1.5"], "argument --caption-dropout: must be a share from 0 to 1, got 1.5"),
    (["--ema-decay", "1"], "argument --ema-decay: must be below 1, got 1.0"),
    (["--image-size", "100"], "argument --image-size: the full architecture needs a multiple of 32 (e.g. 96), got 100"),
    (["--vae-crop", "60"], "argument --vae-crop: a multiple of 8 up to --image-size 128, got 60"),
    (["--device", "gpu"], "argument --device: one of auto, cpu, cuda, mps (cuda:N for one GPU of several), got 'gpu'"),
    (["--eval-split", "test"], "argument --eval-split: invalid choice: 'test'"),
])
def test_a_recipe_value_that_cannot_train_is_one_line_before_anything_runs(argv, problem, tmp_path, capsys):
    """Each of these used to start the run: a traceback minutes later (pool size 0, image size 100, no captions)
    or a run that trains nothing (batch 0, a negative learning rate, a budget of 0 minutes)."""
    from kolors.recipe.run import main

    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path / "model"), *argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and problem in err, err
    assert list(tmp_path.iterdir()) == []
