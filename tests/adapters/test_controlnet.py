"""Kolors ControlNets: loading, the per-step residuals, preprocessing, and parity with a plain diffusers loop."""

from __future__ import annotations

import contextlib
import functools
import json

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, EulerDiscreteScheduler, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from PIL import Image, ImageDraw

from helpers.tiny_controlnet import save_controlnet, tiny_controlnet
from kolors import KolorsError
from kolors.adapters.controlnet import ControlNetConditioner, load_controlnet
from kolors.annotators.maps import DWPOSE_FILES, MIDAS_FILE, canny, control_map
from kolors import Control, ControlNetPipeline

STEPS = 4
W, H = 32, 24
PROMPT = "一只白色的狗在草地上奔跑"
NEGATIVE = "模糊，低质量"


# --- tiny ControlNets in the published layout ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_controlnets(tiny_kolors_diffusers, tmp_path_factory):
    root = tmp_path_factory.mktemp("controlnets")
    unet = UNet2DConditionModel.from_pretrained(tiny_kolors_diffusers / "unet", variant="fp16",
                                                torch_dtype=torch.float32)
    folders = {}
    for name, seed in (("canny", 10), ("depth", 11)):
        folders[name] = root / f"Kolors-ControlNet-{name.title()}"
        save_controlnet(tiny_controlnet(unet, seed), folders[name])
    # A ControlNet for another base model: same blocks, 48-wide cross-attention.
    config = {**tiny_controlnet(unet, 12).config, "cross_attention_dim": 48}
    folders["other"] = root / "Other-ControlNet"
    save_controlnet(ControlNetModel.from_config(config), folders["other"])
    return folders


@pytest.fixture(scope="module")
def ours(tiny_kolors_diffusers, tiny_controlnets):
    return ControlNetPipeline.from_pretrained(
        tiny_kolors_diffusers, device="cpu", dtype="float32",
        controlnets={"canny": tiny_controlnets["canny"], "depth": tiny_controlnets["depth"]},
    )


@pytest.fixture(scope="module")
def photo():
    """A picture with clear edges (a disc and a bar on a gradient), at the output size."""
    x = np.linspace(0, 255, W, dtype=np.float32)
    background = np.stack([np.tile(x, (H, 1)), np.full((H, W), 90.0), np.tile(x[::-1], (H, 1))], axis=2)
    picture = Image.fromarray(background.astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    draw.ellipse((4, 3, 18, 17), fill=(250, 30, 30))
    draw.rectangle((21, 5, 27, 20), fill=(20, 200, 40))
    return picture


@pytest.fixture(scope="module")
def depth_picture():
    rng = np.random.RandomState(5)
    return Image.fromarray((rng.rand(H, W) * 255).astype(np.uint8), mode="L")


# --- a plain reference loop from diffusers' own parts -------------------------------------------------------
def _control_tensor(image: Image.Image) -> torch.Tensor:
    processor = VaeImageProcessor(vae_scale_factor=2, do_convert_rgb=True, do_normalize=False)
    return processor.preprocess(image, height=H, width=W)


@torch.no_grad()
def reference_loop(ref, scheduler_config, nets, *, seed, guidance=6.0, init=None, strength=1.0) -> np.ndarray:
    """diffusers' SDXL ControlNet loop (guess_mode False) written out: ``nets`` = [(ControlNetModel, control
    image tensor, scale, start, end)], with the ControlNet's own text projection as the Kolors ControlNet
    class applies it. ``init``: an init image for image-to-image with ``strength``."""
    embeds, neg_embeds, pooled, neg_pooled = ref.encode_prompt(
        PROMPT, device=torch.device("cpu"), num_images_per_prompt=1, do_classifier_free_guidance=True,
        negative_prompt=NEGATIVE)
    context = torch.cat([neg_embeds, embeds])
    added = {"text_embeds": torch.cat([neg_pooled, pooled]),
             "time_ids": torch.tensor([[H, W, 0, 0, H, W]] * 2, dtype=context.dtype)}
    scheduler = EulerDiscreteScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(STEPS)
    generator = torch.Generator().manual_seed(seed)
    if init is None:
        timesteps = scheduler.timesteps
        latents = torch.randn((1, 4, H // 2, W // 2), generator=generator) * scheduler.init_noise_sigma
    else:
        skipped = STEPS - int(STEPS * strength)
        timesteps = scheduler.timesteps[skipped:]
        scheduler.set_begin_index(skipped)
        pixels = VaeImageProcessor(vae_scale_factor=2).preprocess(init, height=H, width=W)
        latents = ref.vae.encode(pixels).latent_dist.sample(generator) * ref.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator)
        latents = scheduler.add_noise(latents, noise, timesteps[:1])
    n = len(timesteps)
    for i, t in enumerate(timesteps):
        model_in = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        down, mid = None, None
        for net, image, scale, start, end in nets:
            keep = 1.0 - float(i / n < start or (i + 1) / n > end)
            d, m = net(model_in, t, encoder_hidden_states=net.encoder_hid_proj(context),
                       controlnet_cond=torch.cat([image] * 2), conditioning_scale=scale * keep,
                       added_cond_kwargs=added, return_dict=False)
            down = d if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        noise_pred = ref.unet(model_in, t, encoder_hidden_states=context, added_cond_kwargs=added,
                              down_block_additional_residuals=down, mid_block_additional_residual=mid,
                              return_dict=False)[0]
        uncond, cond = noise_pred.chunk(2)
        latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents, generator=generator,
                                 return_dict=False)[0]
    image = ref.vae.decode(latents / ref.vae.config.scaling_factor, return_dict=False)[0]
    return (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def reference(reference_pipeline, tiny_kolors_diffusers):
    """The reference loop on diffusers' KolorsPipeline parts and the folder's own scheduler settings."""
    config = EulerDiscreteScheduler.load_config(tiny_kolors_diffusers / "scheduler")
    return functools.partial(reference_loop, reference_pipeline, config)


@pytest.fixture(scope="module")
def reference_nets(tiny_controlnets):
    return {name: ControlNetModel.from_pretrained(tiny_controlnets[name], variant="fp16", torch_dtype=torch.float32)
            for name in ("canny", "depth")}


def generate(ours, controls, **kwargs):
    kwargs = {"steps": STEPS, "seed": 4, **kwargs}
    return ours(PROMPT, NEGATIVE, controls=controls, progress=False, **kwargs)


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    difference = np.abs(got - want).max()
    assert difference <= 1 / 255, f"max pixel difference {difference}"


# --- parity ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def without_controlnet(ours):
    return generate(ours, [], guidance=6.0, width=W, height=H).pixels


def test_single_controlnet_matches_reference_loop(ours, reference, reference_nets, photo, without_controlnet):
    got = generate(ours, [Control("canny", photo)])  # defaults: scale 0.7, window [0, 0.9), guidance 6
    nets = [(reference_nets["canny"], _control_tensor(canny(photo)), 0.7, 0.0, 0.9)]
    assert_close(got.pixels, reference(nets, seed=4))
    assert np.abs(got.pixels - without_controlnet).max() > 0.02  # the ControlNet has a visible effect


def test_several_controlnets_add_and_windows_are_respected(ours, reference, reference_nets, photo,
                                                           depth_picture):
    controls = [Control("canny", photo, scale=0.8, start=0.0, end=0.5),
                Control("depth", depth_picture, scale=1.2, start=0.25, end=1.0)]
    got = generate(ours, controls, guidance=4.0, seed=9)
    nets = [(reference_nets["canny"], _control_tensor(canny(photo)), 0.8, 0.0, 0.5),
            (reference_nets["depth"], _control_tensor(depth_picture), 1.2, 0.25, 1.0)]
    assert_close(got.pixels, reference(nets, seed=9, guidance=4.0))
    only_canny = generate(ours, controls[:1], guidance=4.0, seed=9)
    assert np.abs(got.pixels - only_canny.pixels).max() > 0.02


def test_image_to_image_with_controlnet_matches_reference_loop(ours, reference, reference_nets, photo):
    rng = np.random.RandomState(1)
    init = Image.fromarray((rng.rand(H, W, 3) * 255).astype(np.uint8))
    got = generate(ours, [Control("canny", photo, scale=1.0, end=1.0)], image=init, strength=0.75)
    nets = [(reference_nets["canny"], _control_tensor(canny(photo)), 1.0, 0.0, 1.0)]
    assert_close(got.pixels, reference(nets, seed=4, init=init, strength=0.75))
    assert got.parameters[0]["strength"] == 0.75


@pytest.mark.parametrize("control", [dict(scale=0.0), dict(start=0.0, end=0.2), dict(start=0.9, end=1.0)],
                         ids=["scale-0", "window-ends-in-first-step", "window-starts-in-last-step"])
def test_controlnet_that_never_acts_changes_nothing(ours, photo, without_controlnet, control):
    got = generate(ours, [Control("canny", photo, **control)], guidance=6.0)
    assert np.array_equal(got.pixels, without_controlnet)


def test_batch_image_equals_single_run_at_its_seed(ours, photo):
    controls = [Control("canny", photo, scale=1.0)]
    batch = generate(ours, controls, seed=20, num_images=2)
    single = generate(ours, controls, seed=21)
    assert np.abs(batch.pixels[1] - single.pixels[0]).max() <= 1e-4


def test_offload_puts_the_controlnets_on_the_device_while_denoising(ours, photo, depth_picture, monkeypatch):
    moved = []

    @contextlib.contextmanager
    def using(*modules):
        moved.extend(dict.fromkeys(modules))
        yield

    monkeypatch.setattr(ours.placement, "using", using)
    generate(ours, [Control("canny", photo), Control("depth", depth_picture), Control("canny", photo)], steps=1)
    canny, depth = ours.controlnets.model("canny"), ours.controlnets.model("depth")
    assert moved.count(canny) == 1 and moved.count(depth) == 1
    assert moved.index(canny) < moved.index(ours.components.unet)


def test_guidance_window_selects_steps():
    calls = []

    class Recorder(torch.nn.Module):
        dtype = torch.float32
        encoder_hid_proj = None
        config = None

        def forward(self, model_in, t, **kwargs):
            calls.append(int(t))
            return [torch.zeros(1)], torch.zeros(1)

    hook = ControlNetConditioner(Recorder(), torch.zeros(1, 3, 8, 8), scale=1.0, start=0.2, end=0.9)
    timesteps = torch.arange(10, 0, -1)
    hook.begin(None, [], torch.zeros(1, 4, 4, 4), timesteps)
    active = [i for i, t in enumerate(timesteps) if hook.unet_kwargs(torch.zeros(2, 4, 4, 4), t, i / 10, None, {})]
    assert active == [2, 3, 4, 5, 6, 7, 8]  # start <= i/n and (i+1)/n <= end
    assert calls == [int(timesteps[i]) for i in active]


# --- API: defaults, parameters, errors ---------------------------------------------------------------------
def test_defaults_and_parameters_round_trip(ours, photo, tmp_path):
    path = tmp_path / "photo.png"
    photo.save(path)
    result = ours(PROMPT, controls=[Control("canny", path)], steps=2, seed=1, progress=False)
    params = result.parameters[0]
    assert result.images[0].size == (W, H)  # the control image's size
    assert params["guidance"] == 6.0
    assert params["controls"] == [{"type": "canny", "image": str(path), "scale": 0.7, "start": 0.0, "end": 0.9,
                                   "controlnet": ours.controlnets.folder("canny")}]
    json.dumps(params)
    again = ours(PROMPT, controls=params["controls"], steps=2, seed=1, progress=False)
    assert np.array_equal(again.pixels, result.pixels)


def test_controlnet_for_another_base_model_is_refused(ours, tiny_controlnets):
    with pytest.raises(KolorsError, match="different base model: its cross_attention_dim is 48") as err:
        ours.add_controlnet("canny2", tiny_controlnets["other"])
    assert "\n" not in str(err.value)
    with pytest.raises(KolorsError, match="text embedding width is 64, the base model's is 4096"):
        load_controlnet(tiny_controlnets["canny"], "cpu", torch.float32, unet={"encoder_hid_dim": 4096,
                        "encoder_hid_dim_type": "text_proj", "cross_attention_dim": 2048})


def test_load_controlnet_reads_the_published_layout(tiny_controlnets, reference_nets, ours):
    net = load_controlnet(tiny_controlnets["depth"], "cpu", torch.float16, unet=ours.components.unet)
    assert net.dtype == torch.float16 and not net.training
    want = reference_nets["depth"].state_dict()
    assert all(torch.equal(v.float(), want[k]) for k, v in net.state_dict().items())


@pytest.mark.parametrize("bad, message", [(dict(scale=-1.0), "scale must be a number >= 0"),
                                          (dict(start=0.5, end=0.5), "0 <= start < end <= 1")])
def test_bad_control_settings_are_rejected(ours, photo, bad, message):
    with pytest.raises(KolorsError, match=message):
        generate(ours, [Control("canny", photo, **bad)])


def test_control_without_a_loaded_controlnet_says_how_to_load_one(ours, photo):
    with pytest.raises(KolorsError, match="no ControlNet is loaded for 'pose'"):
        generate(ours, [Control("pose", photo)])


# --- preprocessing -----------------------------------------------------------------------------------------
def test_canny_edges(photo):
    import cv2

    edges = canny(photo)
    assert edges.mode == "RGB" and edges.size == photo.size
    pixels = np.asarray(edges)
    assert set(np.unique(pixels)) <= {0, 255} and (pixels == 255).any()
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert np.array_equal(pixels[..., 0], cv2.Canny(np.asarray(photo), 100, 200))
    assert (np.asarray(canny(photo, 400, 900)) == 255).sum() < (pixels == 255).sum()
    assert not np.asarray(canny(Image.new("RGB", (W, H), (120, 40, 200)))).any()


def test_ready_maps_are_used_as_they_are(depth_picture):
    got = control_map("depth", depth_picture)
    assert got.mode == "RGB" and np.array_equal(np.asarray(got)[..., 1], np.asarray(depth_picture))


@pytest.mark.parametrize("kind, missing", [("depth", "config.json"), ("pose", DWPOSE_FILES[0])])
def test_missing_annotator_file_is_named(tmp_path, photo, kind, missing):
    with pytest.raises(KolorsError, match=f"{missing}.* is not in .*ready {kind} map") as err:
        control_map(kind, photo, detect=True, annotator_dir=tmp_path)
    assert "\n" not in str(err.value)
