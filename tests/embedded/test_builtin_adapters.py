"""Image-conditioned generation and LoRA on the built-in model, checked by what the images show."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from PIL import Image

from kolors.adapters.lora import fuse_lora, load_lora, unfuse_lora, unload_lora
from kolors.data.shapes import Scene, Shape, render
from kolors.evaluation.shapes_checker import check_image
from kolors.pipelines.legacy import Image2ImagePipeline

# Of 4 seeds, how many must draw the asked blue shape in the asked corner (measured with the shipped weights).
INPAINT_CORNER_HITS = 3


@pytest.fixture(scope="module")
def pipe():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("KOLORS_MODEL", raising=False)
        return Image2ImagePipeline.from_pretrained(device="cpu")


@pytest.fixture(scope="module")
def inpaint():
    from kolors import InpaintPipeline

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("KOLORS_MODEL", raising=False)
        return InpaintPipeline.from_pretrained(device="cpu")


@pytest.fixture(scope="module")
def source():
    """A rendered ground-truth scene: a large red square in the top-left corner on white."""
    scene = Scene(shapes=(Shape(shape="square", colour="red", size="large", position="top-left"),),
                  background="white")
    return render(scene, 128)


def quarter(image: Image.Image, left: int, top: int) -> Image.Image:
    """The 64-px quarter at (left, top), scaled back to the model's size for the checker."""
    return image.crop((left, top, left + 64, top + 64)).resize((128, 128), Image.NEAREST)


def test_low_strength_keeps_the_layout_and_high_strength_follows_the_prompt(pipe, source):
    truth = check_image(source)
    assert (truth.colour, truth.shape, truth.position) == ("red", "square", "top-left")
    for prompt in ("a red square", "一个红色的正方形"):
        kept = check_image(pipe(prompt, source, strength=0.3, seed=0, progress=False).images[0])
        assert (kept.colour, kept.shape, kept.position) == ("red", "square", "top-left"), prompt
    redrawn = [check_image(im).colour for im in pipe("a blue circle", source, strength=1.0, seed=0, num_images=2,
                                                     progress=False).images]
    assert "blue" in redrawn, redrawn


def _random_unet_lora(unet: torch.nn.Module, path, rank: int = 4, seed: int = 0) -> None:
    from diffusers import KolorsPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    model = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank,
                                               target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
                                    copy.deepcopy(unet))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * (1.0 / math.sqrt(param[0].numel())))
    state = {k: v.contiguous() for k, v in get_peft_model_state_dict(model).items()}
    KolorsPipeline.save_lora_weights(path.parent, weight_name=path.name,
                                     unet_lora_layers=convert_state_dict_to_diffusers(state))


def test_lora_changes_the_image_unload_restores_it_and_fusing_keeps_it(tmp_path):
    from kolors import load_pipeline

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("KOLORS_MODEL", raising=False)
        t2i = load_pipeline(device="cpu")

    def image() -> np.ndarray:
        return np.asarray(t2i("a green triangle", seed=1, progress=False).images[0], dtype=np.float32) / 255

    base = image()
    path = tmp_path / "random_lora.safetensors"
    _random_unet_lora(t2i.components.unet, path)
    load_lora(t2i, path, weight=1.0)
    with_lora = image()
    assert np.abs(with_lora - base).mean() > 0.01
    fuse_lora(t2i)
    assert np.abs(image() - with_lora).max() <= 1e-3 + 1 / 255  # PNG-level pixels: rounding can flip one level
    unfuse_lora(t2i)
    unload_lora(t2i)
    assert np.array_equal(image(), base)


def test_inpainting_redraws_only_the_masked_region(inpaint, source):
    mask = np.zeros((128, 128), dtype=np.uint8)
    mask[:64, :64] = 255  # the quarter with the red square
    feather = 4
    outside = np.ones((128, 128), dtype=bool)
    outside[: 64 + feather, : 64 + feather] = False
    before = np.asarray(source, dtype=np.int16)
    for prompt in ("a blue square in the top left corner", "左上角有一个蓝色的正方形"):
        blue = 0
        for out in inpaint(prompt, source, Image.fromarray(mask), feather=feather, seed=0, num_images=6,
                        progress=False).images:
            after = np.asarray(out, dtype=np.int16)
            assert np.abs(after[outside] - before[outside]).max() <= 1, prompt
            assert np.abs(after[:64, :64] - before[:64, :64]).mean() > 3, prompt  # the quarter was redrawn
            # what the quarter now holds, read on its own: the model picks the quarter's background when the prompt
            # does not say (beige in some seeds), and a beige patch on white would be the whole image's "shape"
            drawn = check_image(quarter(out, 0, 0))
            assert drawn.colour != "red", prompt  # the red square is gone
            blue += (drawn.colour, drawn.shape) == ("blue", "square")
        # a small model: most seeds, not every one; seeds 0-7 gave 8/8 in both languages with v3's weights
        assert blue >= 5, (prompt, blue)


def test_inpainting_matches_the_background_the_prompt_names(inpaint, source):
    """Without a background word the model picks the redrawn quarter's own (beige on white in 4 of 8 seeds);
    naming it gives white, which is the rest of the picture: no seam."""
    mask = np.zeros((128, 128), dtype=np.uint8)
    mask[:64, :64] = 255
    for prompt in ("a blue square in the top left corner on a white background", "左上角有一个蓝色的正方形，白色背景"):
        quarters = [check_image(quarter(out, 0, 0)) for out in inpaint(
            prompt, source, Image.fromarray(mask), feather=4, seed=0, num_images=6, progress=False).images]
        white = sum(min(q.background) >= 245 and q.colour == "blue" for q in quarters)
        assert white >= 5, (prompt, [(q.colour, q.background) for q in quarters])  # seeds 0-7: 8 of 8


def test_inpainting_puts_the_asked_shape_where_the_prompt_says(inpaint, source):
    """The mask covers an empty corner (bottom right, away from the red square); the prompt names that corner.
    The first built-in model never placed shapes there and left it empty."""
    mask = np.zeros((128, 128), dtype=np.uint8)
    mask[64:, 64:] = 255
    for prompt in ("a blue circle in the bottom right corner", "右下角有一个蓝色的圆形"):
        found = []
        for out in inpaint(prompt, source, Image.fromarray(mask), feather=4, seed=0, num_images=4,
                        progress=False).images:
            kept = np.asarray(out)[:60, :60].astype(np.int16)  # outside the mask and its feather
            assert np.abs(kept - np.asarray(source)[:60, :60]).max() <= 1, prompt  # the red square is kept
            found.append(check_image(quarter(out, 64, 64)).colour)
        assert found.count("blue") >= INPAINT_CORNER_HITS, (prompt, found)
