"""The recipe's toy-size model, made once for every recipe test that trains on from it."""

from __future__ import annotations

import pytest

from kolors.recipe.options import RecipeConfig
from kolors.recipe.run import run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedded")
    config = RecipeConfig(
        out=root / "model",
        device="cpu",
        architecture="tiny",
        image_size=64,
        workers=1,
        pool_size=96,
        tokenizer_scenes=1000,
        steps_vae=8,
        batch_size_vae=4,
        steps_diffusion=40,
        batch_size=8,
        lr=2e-3,
        warmup_steps=5,
        ema_decay=0.9,
        log_seconds=0.0,
        checkpoint_minutes=1e9,
        eval_pairs=2,
        eval_final_pairs=0,
        eval_seeds=1,
        eval_grid="2x3",
        eval_batch=8,
        command="pytest",
    )
    return run(config)
