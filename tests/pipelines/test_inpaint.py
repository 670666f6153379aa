"""Inpainting / outpainting on tiny checkpoints: a 9-channel Kolors-Inpainting UNet and an ordinary 4-channel one.

diffusers has no Kolors inpainting pipeline; its SDXL inpainting pipeline, given our prompt embeddings and the same
UNet/VAE/scheduler, follows the same conventions (channel order, mask processing, latent blending), so it serves as
the reference inside the mask. Outside the mask the input pixels must come back unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLInpaintPipeline, UNet2DConditionModel
from PIL import Image, ImageDraw

from helpers.tiny_controlnet import save_controlnet, tiny_controlnet
from helpers.tiny_kolors import write_tiny_kolors
from kolors import KolorsError
from kolors import Control
from kolors import InpaintPipeline
from kolors.pipelines.inpainting import outpaint_canvas, place_on_canvas
from kolors.schedulers import make_scheduler

STEPS = 4
W, H = 32, 24
PROMPT = "一只红色的猫坐在沙发上"


@pytest.fixture(scope="module")
def inpainting_folder(tmp_path_factory):
    return write_tiny_kolors(tmp_path_factory.mktemp("tiny_inpainting"), "diffusers", seed=0, inpainting=True)


@pytest.fixture(scope="module")
def nine(inpainting_folder):
    return InpaintPipeline.from_pretrained(inpainting_folder, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def four(tiny_kolors_diffusers):
    return InpaintPipeline.from_pretrained(tiny_kolors_diffusers, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def picture():
    rng = np.random.RandomState(0)
    return Image.fromarray((rng.rand(H, W, 3) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def mask():
    m = np.zeros((H, W), np.uint8)
    m[6:18, 10:26] = 255
    return Image.fromarray(m)


def pixels_of(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def reference(pipe: InpaintPipeline, scheduler: str) -> StableDiffusionXLInpaintPipeline:
    c = pipe.components
    ref = StableDiffusionXLInpaintPipeline(
        vae=c.vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=c.unet,
        scheduler=make_scheduler(scheduler, c.scheduler), requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=False, add_watermarker=False)
    ref.set_progress_bar_config(disable=True)
    return ref


@pytest.mark.parametrize("kind", ["nine", "four"])
@pytest.mark.parametrize(("strength", "scheduler"), [(0.999, "default"), (1.0, "default"), (0.6, "euler_a"),
                                                   (0.999, "dpmpp_2m_karras")])
def test_matches_diffusers_sdxl_inpainting_inside_the_mask(request, kind, strength, scheduler, picture, mask):
    ours = request.getfixturevalue(kind)
    cond, uncond = ours.encode_prompt(PROMPT, "模糊")
    want = reference(ours, scheduler)(
        prompt_embeds=cond.tokens, pooled_prompt_embeds=cond.pooled, negative_prompt_embeds=uncond.tokens,
        negative_pooled_prompt_embeds=uncond.pooled, image=picture, mask_image=mask, width=W, height=H,
        strength=strength, num_inference_steps=STEPS, guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(3), output_type="np").images
    got = ours(PROMPT, picture, mask, "模糊", strength=strength, steps=STEPS, guidance=5.0, seed=3,
               scheduler=scheduler, progress=False)
    inside = np.asarray(mask) >= 128
    assert got.pixels.shape == want.shape == (1, H, W, 3)
    diff = np.abs(got.pixels[0][inside] - want[0][inside]).max()
    assert diff <= 1e-3, diff
    assert got.parameters[0]["strength"] == strength


def test_unet_input_is_latents_mask_then_masked_image_latents(nine, picture, mask):
    seen = []
    hook = nine.components.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        nine(PROMPT, picture, mask, strength=1.0, steps=2, guidance=5.0, seed=11, progress=False)
    finally:
        hook.remove()
    assert len(seen) == 2 and seen[0].shape == (2, 9, H // 2, W // 2)  # [uncond, cond] rows, 4 + 1 + 4 channels
    latent_mask = torch.nn.functional.interpolate(
        torch.from_numpy((np.asarray(mask) >= 128).astype(np.float32))[None, None], size=(H // 2, W // 2))
    # Redo the generator's draws: noise first, then the masked image's posterior sample (diffusers' order).
    g = torch.Generator().manual_seed(11)
    torch.randn((1, 4, H // 2, W // 2), generator=g)
    image = torch.from_numpy(np.asarray(picture, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    masked_latents = nine.encode_pixels(image * (latent_mask.new_tensor(np.asarray(mask) < 128)), [g])
    for x in seen:
        for row in x:
            assert torch.equal(row[4:5], latent_mask[0])
            assert torch.allclose(row[5:], masked_latents[0], atol=1e-5)


@pytest.mark.parametrize("kind", ["nine", "four"])
@pytest.mark.parametrize("feather", [0, 3])
def test_pixels_outside_mask_and_feather_are_kept_and_the_masked_region_changes(request, kind, feather, picture,
                                                                                mask):
    ours = request.getfixturevalue(kind)
    got = ours(PROMPT, picture, mask, steps=STEPS, seed=1, feather=feather, progress=False)
    out, src = pixels_of(got.images[0]), pixels_of(picture)
    inside = np.asarray(mask) >= 128
    near = np.zeros_like(inside)
    ys, xs = np.nonzero(inside)
    near[max(0, ys.min() - feather) : ys.max() + feather + 1, max(0, xs.min() - feather) : xs.max() + feather + 1] = 1
    assert np.abs(out - src)[~near].max() <= 1
    assert np.abs(out - src)[inside].mean() > 10
    if feather:
        ring = near & ~inside
        assert np.abs(out - src)[ring].max() > 0  # the ramp blends generated pixels in
        assert got.parameters[0]["feather"] == feather


def test_strength_zero_keeps_the_image(four, picture, mask):
    got = four(PROMPT, picture, mask, strength=0.0, steps=STEPS, seed=1, progress=False)
    assert np.array_equal(pixels_of(got.images[0]), pixels_of(picture))


def test_outpaint_grows_the_canvas_and_keeps_the_original(nine, picture):
    got = nine.outpaint(PROMPT, picture, (8, 0, 5, 4), steps=STEPS, seed=2, feather=0, progress=False)
    out = pixels_of(got.images[0])
    assert out.shape == (H + 8, W + 16, 3)  # right grown from 5 to 8 for a multiple of 8
    assert np.abs(out[0:H, 8 : 8 + W] - pixels_of(picture)).max() <= 1
    assert np.abs(out[:, :8] - out[:, 8:9]).mean() > 5  # the new strip is generated, not the repeated edge
    assert got.parameters[0]["extend"] == [8, 0, 8, 8]
    assert (got.parameters[0]["width"], got.parameters[0]["height"]) == (W + 16, H + 8)


def test_outpaint_canvas_and_mask():
    canvas, mask, grown = outpaint_canvas(Image.new("RGB", (10, 8), (1, 2, 3)), (1, 2, 3, 0))
    assert canvas.size == mask.size == (16, 16) and grown == (1, 2, 5, 6)
    m = np.asarray(mask)
    assert m[2:10, 1:11].max() == 0 and m.sum() == 255 * (16 * 16 - 80)


def test_mask_of_another_size_is_rejected_unless_resized(four, picture, tmp_path):
    small = tmp_path / "mask.png"
    Image.new("L", (W, H // 2), 255).save(small)
    with pytest.raises(KolorsError, match=rf"mask.png is {W}×{H // 2} but the image is {W}×{H}: .*--resize-mask"):
        four(PROMPT, picture, small, steps=1, progress=False)
    got = four(PROMPT, picture, small, steps=1, seed=1, resize_mask=True, progress=False)
    assert got.parameters[0]["resize_mask"] is True and got.parameters[0]["mask"] == str(small)


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_strength_outside_unit_interval_is_rejected(four, picture, mask, strength):
    with pytest.raises(KolorsError, match="strength must be between 0 and 1"):
        four(PROMPT, picture, mask, strength=strength, progress=False)


def test_unreadable_files_are_named(four, picture, mask, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(KolorsError, match="cannot read image .*broken.png"):
        four(PROMPT, bad, mask, progress=False)
    with pytest.raises(KolorsError, match="cannot read mask .*broken.png"):
        four(PROMPT, picture, bad, progress=False)
    with pytest.raises(KolorsError, match="mask not found: .*missing.png"):
        four(PROMPT, picture, tmp_path / "missing.png", progress=False)


def test_inpainting_unet_uses_the_official_defaults(nine, four, picture, mask):
    got = nine(PROMPT, picture, mask, seed=1, progress=False)
    assert (got.parameters[0]["steps"], got.parameters[0]["guidance"]) == (25, 6.0)
    assert got.parameters[0]["strength"] == 0.999
    assert four.defaults.steps == four(PROMPT, picture, mask, steps=None, seed=1, strength=0.0,
                                       progress=False).parameters[0]["steps"]


def test_perturbed_attention_guidance_with_the_inpainting_unet(nine, picture, mask):
    plain = nine(PROMPT, picture, mask, steps=2, seed=5, progress=False)
    pag = nine(PROMPT, picture, mask, steps=2, seed=5, pag_scale=3.0, progress=False)
    assert pag.parameters[0]["pag_scale"] == 3.0
    inside = np.asarray(mask) >= 128
    assert np.abs(pag.pixels[0][inside] - plain.pixels[0][inside]).max() > 1e-3
    assert np.abs(pixels_of(pag.images[0]) - pixels_of(picture))[~inside].max() <= 1


def test_inpainting_model_is_refused_for_text_to_image(inpainting_folder):
    from kolors.pipelines.legacy import Text2ImagePipeline

    pipe = Text2ImagePipeline.from_pretrained(inpainting_folder, device="cpu", dtype="float32")
    with pytest.raises(KolorsError, match="inpainting model .*kolors inpaint"):
        pipe(PROMPT, steps=1, progress=False)


def test_sizes_not_multiple_of_8_are_padded_and_cropped_back(four, picture, mask):
    odd, odd_mask = picture.crop((0, 0, 30, 21)), mask.crop((0, 0, 30, 21))
    got = four(PROMPT, odd, odd_mask, steps=2, seed=3, progress=False)
    assert got.images[0].size == (30, 21) and got.pixels.shape == (1, 21, 30, 3)
    inside = np.asarray(odd_mask) >= 128
    assert np.array_equal(pixels_of(got.images[0])[~inside], pixels_of(odd)[~inside])
    assert (got.parameters[0]["width"], got.parameters[0]["height"]) == (32, 24)
    again = four(PROMPT, odd, odd_mask, steps=2, seed=3, width=32, height=24, progress=False)  # the stored size
    assert np.array_equal(pixels_of(again.images[0]), pixels_of(got.images[0]))


# --- ControlNets -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def canny_controlnet(tiny_kolors_diffusers, tmp_path_factory):
    """A tiny canny ControlNet that has an effect (made from the 4-channel tiny UNet: it fits both models)."""
    unet = UNet2DConditionModel.from_pretrained(tiny_kolors_diffusers / "unet", variant="fp16",
                                                torch_dtype=torch.float32)
    folder = tmp_path_factory.mktemp("controlnet") / "Kolors-ControlNet-Canny"
    save_controlnet(tiny_controlnet(unet, seed=10), folder)
    return folder


@pytest.fixture(scope="module")
def edges():
    """A picture with clear edges: a light disc on a dark ground."""
    picture = Image.new("RGB", (W, H), (20, 20, 20))
    ImageDraw.Draw(picture).ellipse((8, 3, 27, 21), fill=(240, 240, 240))
    return picture


@pytest.mark.parametrize("kind", ["nine", "four"])
def test_a_control_steers_the_masked_region_and_the_rest_is_kept(request, kind, picture, mask, canny_controlnet,
                                                                 edges):
    ours = request.getfixturevalue(kind)
    net = ours.add_controlnet("canny", canny_controlnet)
    channels = []
    hook = net.register_forward_pre_hook(lambda module, args: channels.append(args[0].shape[1]))
    try:
        steered = ours(PROMPT, picture, mask, steps=STEPS, seed=1, controls=[Control("canny", edges)],
                       progress=False)
    finally:
        hook.remove()
    plain = ours(PROMPT, picture, mask, steps=STEPS, seed=1, guidance=6.0, progress=False)
    idle = ours(PROMPT, picture, mask, steps=STEPS, seed=1, controls=[Control("canny", edges, scale=0.0)],
                progress=False)

    inside = np.asarray(mask) >= 128
    assert np.abs(pixels_of(steered.images[0]) - pixels_of(picture))[~inside].max() <= 1
    assert np.abs(steered.pixels[0] - plain.pixels[0])[inside].mean() > 0.01  # the control changed the redraw
    assert np.array_equal(idle.pixels, plain.pixels)  # at scale 0 the ControlNet adds nothing
    assert channels and set(channels) == {4}  # it sees the latents, not the 9-channel UNet input
    params = steered.parameters[0]
    assert params["guidance"] == 6.0 and params["strength"] == 0.999
    assert params["controls"] == [{"type": "canny", "image": None, "scale": 0.7, "start": 0.0, "end": 0.9,
                                   "controlnet": str(canny_controlnet)}]


def test_bad_controls_are_refused_before_generating(four, picture, mask, canny_controlnet):
    with pytest.raises(KolorsError, match="control scale must be a number >= 0"):
        four(PROMPT, picture, mask, controls=[Control("canny", picture, scale=-1.0, controlnet=canny_controlnet)],
             progress=False)
    with pytest.raises(KolorsError, match="unknown control setting 'strength'"):
        four(PROMPT, picture, mask, controls=[{"type": "canny", "image": picture, "strength": 0.5}], progress=False)
    with pytest.raises(KolorsError, match="no ControlNet is loaded for 'depth'"):
        four(PROMPT, picture, mask, controls=[Control("depth", picture)], progress=False)


def test_control_maps_of_an_odd_sized_image_are_padded_with_it(four, picture, mask, canny_controlnet, edges,
                                                               monkeypatch):
    odd, odd_mask, odd_edges = (im.crop((0, 0, 30, 21)) for im in (picture, mask, edges))
    from kolors.pipelines import tasks

    sizes = []
    real = tasks.control_maps
    monkeypatch.setattr(tasks, "control_maps",
                        lambda *args: sizes.append([m.size for m in real(*args)]) or real(*args))
    got = four(PROMPT, odd, odd_mask, steps=2, seed=3, progress=False,
               controls=[Control("canny", odd_edges, controlnet=canny_controlnet)])
    assert sizes == [[(32, 24)]]  # padded to the generated size like the image, not stretched to it
    assert got.images[0].size == (30, 21)
    inside = np.asarray(odd_mask) >= 128
    assert np.array_equal(pixels_of(got.images[0])[~inside], pixels_of(odd)[~inside])



def test_place_on_canvas_puts_a_map_of_the_image_size_where_the_image_sits():
    control_map = Image.new("RGB", (10, 8), (200, 100, 50))
    placed = np.asarray(place_on_canvas(control_map, (10, 8), (1, 2, 5, 6)))
    assert placed.shape == (16, 16, 3)
    assert (placed[2:10, 1:11] == (200, 100, 50)).all()
    assert placed.sum() == np.asarray(control_map, dtype=np.int64).sum()  # black everywhere else
    canvas_sized = Image.new("L", (16, 16), 7)
    assert place_on_canvas(canvas_sized, (10, 8), (1, 2, 5, 6)) is canvas_sized


@pytest.mark.parametrize("kind", ["nine", "four"])
def test_outpaint_with_a_control_places_its_map_and_keeps_the_original(request, kind, picture, canny_controlnet,
                                                                       edges, monkeypatch):
    ours = request.getfixturevalue(kind)
    ours.add_controlnet("canny", canny_controlnet)
    from kolors.pipelines import tasks

    maps = []
    real = tasks.control_maps
    monkeypatch.setattr(tasks, "control_maps", lambda *args: maps.append(real(*args)) or real(*args))
    steered = ours.outpaint(PROMPT, picture, (8, 0, 0, 0), steps=STEPS, seed=1, feather=0,
                            controls=[Control("canny", edges)],
                            progress=False)
    plain = ours.outpaint(PROMPT, picture, (8, 0, 0, 0), steps=STEPS, seed=1, guidance=6.0, feather=0,
                          progress=False)

    (placed,) = maps[0]
    assert placed.size == (W + 8, H)
    placed = np.asarray(placed.convert("L"))
    assert placed[:, :8].max() == 0 and placed[:, 8:].max() == 255  # no edges in the new strip, the disc's in place
    out = pixels_of(steered.images[0])
    assert np.abs(out[:, 8:] - pixels_of(picture)).max() <= 1
    assert np.abs(steered.pixels[0] - plain.pixels[0])[:, :8].mean() > 0.01  # the control changed the new strip
    assert steered.parameters[0]["controls"][0]["type"] == "canny" and steered.parameters[0]["extend"] == [8, 0, 0, 0]

    canvas_edges = Image.new("RGB", (W + 8, H), (20, 20, 20))
    ImageDraw.Draw(canvas_edges).ellipse((0, 3, 20, 21), fill=(240, 240, 240))
    ours.outpaint(PROMPT, picture, (8, 0, 0, 0), steps=1, seed=1, controls=[Control("canny", canvas_edges)],
                  progress=False)
    drawn = np.asarray(maps[1][0].convert("L"))
    assert maps[1][0].size == (W + 8, H) and drawn[:, :8].max() == 255  # a canvas-sized map covers the new strip
