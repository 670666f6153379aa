"""One pipeline serves many different requests: adapters applied per request and gone afterwards, adapter files
read once, pipelines independent of each other, batches of requests, progress and cancellation."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from helpers.tiny_controlnet import save_controlnet, tiny_controlnet
from helpers.tiny_ip_adapter import write_tiny_ip_adapter_plus
from helpers.tiny_lora import peft_lora, write_lora
from kolors import Control, GenerationCancelled, GenerationRequest, ImagePrompt, KolorsError, Lora, load_pipeline

W, H = 32, 24
PROMPT = "一只红色的猫坐在沙发上"


def load(folder):
    return load_pipeline(folder, device="cpu", dtype="float32")


def request(**fields) -> GenerationRequest:
    return GenerationRequest(fields.pop("prompt", PROMPT), steps=2, seed=fields.pop("seed", 3), width=W, height=H,
                             **fields)


@pytest.fixture(scope="module")
def files(tiny_kolors_diffusers, tmp_path_factory):
    """LoRA a (UNet + text encoder) and b (UNet), a canny ControlNet, an IP-Adapter-Plus, an image and a mask."""
    root = tmp_path_factory.mktemp("adapters")
    base = load(tiny_kolors_diffusers)
    unet, text_encoder = base.components.unet, base.components.text_encoder
    a = write_lora(root / "a.safetensors", peft_lora(unet, ["to_q", "to_k", "to_v", "ff.net.2"], 4, seed=1),
                   peft_lora(text_encoder, ["query_key_value"], 2, seed=2))
    b = write_lora(root / "b.safetensors", peft_lora(unet, ["to_k", "to_out.0"], 2, seed=3))
    save_controlnet(tiny_controlnet(unet, seed=0), root / "canny")
    rng = np.random.RandomState(0)
    photo = root / "photo.png"
    picture = Image.fromarray((rng.rand(H, W, 3) * 255).astype(np.uint8))
    ImageDraw.Draw(picture).ellipse((6, 4, 22, 20), fill=(250, 250, 250))
    picture.save(photo)
    mask = root / "mask.png"
    Image.fromarray(np.pad(np.full((12, 16), 255, np.uint8), ((6, 6), (8, 8)))).save(mask)
    return {"a": a, "b": b, "canny": root / "canny", "ip": write_tiny_ip_adapter_plus(root), "photo": photo,
            "mask": mask}


def sequence(files) -> list[GenerationRequest]:
    return [
        request(loras=[Lora(files["a"], 0.8)]),
        request(),
        request(loras=[Lora(files["a"]), Lora(files["b"], 0.5)]),
        request(controls=[Control("canny", files["photo"], controlnet=files["canny"])]),
        request(ip_adapter=ImagePrompt(files["ip"], files["photo"], 0.6)),
        GenerationRequest(PROMPT, task="inpaint", init_image=files["photo"], mask=files["mask"], steps=2, seed=3),
        request(loras=[Lora(files["b"])], pag_scale=2.0),
        request(),
    ]


def test_a_sequence_of_requests_gives_what_each_gives_alone(tiny_kolors_diffusers, files):
    warm = load(tiny_kolors_diffusers)
    for req in sequence(files):
        got = warm.generate(req, progress=False)
        alone = load(tiny_kolors_diffusers).generate(req, progress=False)
        assert np.array_equal(got.pixels, alone.pixels), req
        assert got.parameters == alone.parameters
    plain = [warm.generate(request(), progress=False).pixels for _ in range(2)]
    assert np.array_equal(plain[0], plain[1])


def test_adapters_change_the_image_and_are_recorded(tiny_kolors_diffusers, files):
    pipe = load(tiny_kolors_diffusers)
    plain = pipe.generate(request(), progress=False)
    with_lora = pipe.generate(request(loras=[Lora(files["a"], 0.8)]), progress=False)
    assert np.abs(with_lora.pixels - plain.pixels).max() > 0.02
    import hashlib

    record = with_lora.parameters[0]["loras"]
    assert record == [{"name": "a", "file": "a.safetensors", "path": str(files["a"]), "weight": 0.8,
                       "sha256": hashlib.sha256(files["a"].read_bytes()).hexdigest(), "hash": record[0]["hash"]}]
    assert with_lora.parameters[0]["lora_hashes"] == f"a: {record[0]['hash']}"
    assert "loras" not in plain.parameters[0]


def test_two_pipelines_with_different_loras_do_not_affect_each_other(tiny_kolors_diffusers, tiny_kolors_original,
                                                                     files):
    first, second = load(tiny_kolors_diffusers), load(tiny_kolors_original)
    a_request, b_request = request(loras=[Lora(files["a"])]), request(loras=[Lora(files["b"])])
    a_alone = load(tiny_kolors_diffusers).generate(a_request, progress=False).pixels
    b_alone = load(tiny_kolors_original).generate(b_request, progress=False).pixels
    for _ in range(2):  # interleaved
        assert np.array_equal(first.generate(a_request, progress=False).pixels, a_alone)
        assert np.array_equal(second.generate(b_request, progress=False).pixels, b_alone)
    assert np.abs(a_alone - b_alone).max() > 0.02


def test_a_lora_file_is_read_once_until_it_changes(tiny_kolors_diffusers, files, monkeypatch):
    from kolors.adapters import lora as lora_module

    reads = []
    real = lora_module.read_lora
    monkeypatch.setattr(lora_module, "read_lora", lambda path, *a, **k: reads.append(path) or real(path, *a, **k))
    pipe = load(tiny_kolors_diffusers)
    first = pipe.generate(request(loras=[Lora(files["a"], 0.5)]), progress=False)
    pipe.generate(request(), progress=False)
    again = pipe.generate(request(loras=[Lora(files["a"], 0.5)]), progress=False)
    assert len(reads) == 1 and np.array_equal(first.pixels, again.pixels)
    stat = os.stat(files["a"])
    os.utime(files["a"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file changed
    pipe.generate(request(loras=[Lora(files["a"], 0.5)]), progress=False)
    assert len(reads) == 2


def test_loaded_loras_are_bounded_and_clearing_restores_the_weights_bit_for_bit(tiny_kolors_diffusers, files):
    pipe = load(tiny_kolors_diffusers)
    unet = pipe.components.unet
    original = {k: v.clone() for k, v in unet.state_dict().items()}
    pipe.loras.max_loaded = 1
    pipe.generate(request(loras=[Lora(files["a"])]), progress=False)
    pipe.generate(request(loras=[Lora(files["b"])]), progress=False)
    assert [lora.name for lora in pipe.loras.cached()] == ["b"]  # a was dropped
    pipe.loras.clear()
    after = unet.state_dict()
    assert after.keys() == original.keys() and all(torch.equal(after[k], original[k]) for k in original)
    attn = unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1
    assert type(attn.to_k) is torch.nn.Linear


def test_requests_denoised_together_equal_their_single_runs(tiny_kolors_diffusers):
    pipe = load(tiny_kolors_diffusers)
    requests = [request(prompt="一只红色的猫", seed=1, num_images=2), request(prompt="a blue dog", seed=7)]
    together = pipe.generate_batch(requests, progress=False)
    for req, result in zip(requests, together):
        alone = pipe.generate(req, progress=False)
        assert result.seeds == alone.seeds and result.parameters == alone.parameters
        assert np.abs(result.pixels - alone.pixels).max() <= 1 / 255
    with pytest.raises(ValueError, match="differ only in prompts"):
        pipe.generate_batch([request(), request(guidance=2.0)])


def test_progress_reports_every_step_and_cancelling_stops_and_leaves_the_model_clean(tiny_kolors_diffusers,
                                                                                     files):
    pipe = load(tiny_kolors_diffusers)
    seen = []
    result = pipe.generate(request(num_images=3, batch_size=2), progress=False, on_step=seen.append)
    assert [(s.batch, s.step, s.steps, s.seeds) for s in seen] == [(0, 1, 2, (3, 4)), (0, 2, 2, (3, 4)),
                                                                   (1, 1, 2, (5,)), (1, 2, 2, (5,))]
    assert seen[-1].fraction == 1.0 and seen[0].fraction == 0.25
    assert [im.size for im in pipe.preview(seen[0].latents)] == [(W, H)] * 2  # small images: decoded

    def cancel(step):
        if step.step == 1:
            raise GenerationCancelled("cancelled")

    processors = dict(pipe.components.unet.attn_processors)
    with pytest.raises(GenerationCancelled):
        pipe.generate(request(loras=[Lora(files["a"])], ip_adapter=ImagePrompt(files["ip"], files["photo"])),
                      progress=False, on_step=cancel)
    assert pipe.components.unet.attn_processors == processors  # the IP-Adapter is out again
    assert np.array_equal(pipe.generate(request(num_images=3, batch_size=2), progress=False).pixels, result.pixels)


def test_previews_of_small_images_are_decoded_and_of_large_ones_mapped(tiny_kolors_diffusers):
    pipe = load_pipeline(device="cpu")  # the built-in model: small images, decoded
    seen = []
    result = pipe.generate(GenerationRequest("两个绿色的三角形", seed=2, steps=4), progress=False, on_step=seen.append)
    assert np.array_equal(np.asarray(pipe.preview(seen[-1].latents)[0]), np.asarray(result.images[0]))

    from kolors.pipelines import pipeline as pipeline_module

    tiny = load(tiny_kolors_diffusers)  # (random weights: only the path is checked; SDXL's VAE is needed for more)
    latents = torch.randn(2, 4, 8, 6, generator=torch.Generator().manual_seed(9))
    small = pipeline_module.PREVIEW_DECODE_PIXELS
    try:
        pipeline_module.PREVIEW_DECODE_PIXELS = 0  # as for a 1024² image: the linear map, at latent size
        assert [im.size for im in tiny.preview(latents)] == [(6, 8)] * 2
    finally:
        pipeline_module.PREVIEW_DECODE_PIXELS = small


def test_request_errors_are_one_line_before_any_work(tiny_kolors_diffusers, files, tmp_path):
    pipe = load(tiny_kolors_diffusers)
    empty_mask = tmp_path / "empty.png"
    Image.new("L", (W, H)).save(empty_mask)
    cases = [
        (dict(width=13), "width 13 is not a multiple of 8"),
        (dict(steps=0), "steps must be between 1 and 1000"),
        (dict(loras=[Lora(tmp_path / "nope.safetensors")]), "LoRA file not found"),
        (dict(task="inpaint", init_image=files["photo"], mask=empty_mask), "the mask has no white"),
        (dict(controls=[Control("canny", files["photo"], scale=-1)]), "control scale must be a number >= 0"),
        (dict(strength=0.5), "strength goes with an input image"),
        (dict(task="outpaint", init_image=files["photo"], extend=(100000, 0, 0, 0)), "between 0 and 4096"),
    ]
    for fields, message in cases:
        with pytest.raises(KolorsError, match=message) as err:
            pipe.generate(GenerationRequest(PROMPT, **fields), progress=False)
        assert "\n" not in str(err.value)


def test_results_carry_their_latents_and_generation_can_start_from_given_latents(tiny_kolors_diffusers, files):
    pipe = load(tiny_kolors_diffusers)
    drawn = pipe.generate(request(num_images=2), progress=False)
    f = pipe.vae_scale_factor
    assert drawn.latents.shape == (2, 4, H // f, W // f) and drawn.latents.device.type == "cpu"
    assert np.array_equal(pipe.decode(drawn.latents), drawn.pixels)  # the latents the pixels were decoded from

    given = drawn.latents[1:]
    photo = files["photo"]
    kept = pipe.generate(request(init_image=photo, init_latents=given, strength=0.0), progress=False)
    assert np.abs(kept.pixels[0] - drawn.pixels[1]).max() < 1e-5  # strength 0: the given latents, not the photo's
    encoded = pipe.generate(request(init_image=photo, strength=0.0), progress=False)
    assert np.abs(encoded.pixels - kept.pixels).max() > 0.05
    redrawn = pipe.generate(request(init_image=photo, init_latents=given, strength=0.5), progress=False)
    assert redrawn.parameters == [encoded.parameters[0] | {"strength": 0.5}]  # in memory only: not recorded
    inpainted = pipe.generate(request(init_image=photo, init_latents=given, mask=files["mask"], strength=0.5),
                              progress=False)
    outside = np.asarray(Image.open(files["mask"])) < 128
    assert np.abs(inpainted.pixels[0][outside] - np.asarray(Image.open(photo))[outside] / 255).max() < 1e-6

    cases = [(dict(init_latents=given), "input latents go with the image they encode"),
             (dict(init_image=photo, init_latents=given[0]), "must be one (1, channels, height, width) array"),
             (dict(init_image=photo, init_latents=torch.zeros(1, 4, 5, 5), strength=0.5),
              f"the input latents are {5 * f}x{5 * f} pixels with 4 channels but this generation needs 32x24")]
    for fields, message in cases:
        with pytest.raises(KolorsError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            pipe.generate(request(**fields), progress=False)
        assert "\n" not in str(err.value)
