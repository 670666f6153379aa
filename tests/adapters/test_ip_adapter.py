"""Kolors IP-Adapter-Plus and FaceID-Plus: loading, parity with diffusers' load_ip_adapter, unloading, errors, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.tiny_ip_adapter import (
    CLIP_CONFIG,
    FACE_TOKENS,
    face_id_state,
    write_tiny_face_id_plus,
    write_tiny_ip_adapter_plus,
)
from helpers.tiny_kolors import TEXT_HIDDEN, UNET_CONFIG
from kolors import KolorsError, load_pipeline
from kolors.adapters.image_prompts import (
    load_face_id,
    load_ip_adapter,
    loaded_ip_adapters,
    set_ip_adapter_scale,
    unload_ip_adapter,
)
from kolors.adapters.ip_adapter import FaceIDPlusProjection
from kolors.cli.main import main
from kolors.metadata import PARAMETERS_CHUNK, read_parameters, read_png_text

STEPS = 3
W, H = 32, 24
PROMPT = "一只红色的猫坐在沙发上"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("ip_adapters")
    return {
        "plus": write_tiny_ip_adapter_plus(root),
        "face": write_tiny_face_id_plus(root),
        "wide": write_tiny_ip_adapter_plus(root, name="SDXL-like", cross_dim=48),
        "vith": write_tiny_ip_adapter_plus(root, name="ViT-H-like", feature_dim=40),
    }


@pytest.fixture(scope="module")
def reference_image(tmp_path_factory):
    rng = np.random.RandomState(0)
    path = tmp_path_factory.mktemp("images") / "ref.png"
    Image.fromarray((rng.rand(30, 40, 3) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def face_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("face")
    rng = np.random.RandomState(1)
    np.save(folder / "face.npy", rng.randn(512).astype(np.float32))
    Image.fromarray((rng.rand(36, 36, 3) * 255).astype(np.uint8)).save(folder / "crop.png")
    return folder / "face.npy", folder / "crop.png"


@pytest.fixture
def ours(tiny_kolors_diffusers):
    pipe = load_pipeline(tiny_kolors_diffusers, device="cpu", dtype="float32")
    yield pipe
    unload_ip_adapter(pipe)


def generate(pipe, **kwargs):
    return pipe(PROMPT, **{"steps": STEPS, "seed": 5, "width": W, "height": H, "progress": False, **kwargs})


# --- IP-Adapter-Plus: parity with diffusers ---------------------------------------------------------------------
@pytest.mark.parametrize("scale, guidance", [(0.5, 5.0), (1.3, 1.0)])
def test_plus_matches_diffusers_load_ip_adapter(ours, tiny_kolors_diffusers, adapters, reference_image, scale,
                                                guidance):
    from diffusers import KolorsPipeline

    ref = KolorsPipeline.from_pretrained(tiny_kolors_diffusers, variant="fp16", dtype=torch.float32)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = ref.scheduler.from_config(ours.components.scheduler.config)
    ref.load_ip_adapter(str(adapters["plus"]), subfolder="", weight_name="ip_adapter_plus_general.bin",
                        image_encoder_folder="image_encoder")
    ref.set_ip_adapter_scale(scale)
    want = ref(PROMPT, ip_adapter_image=Image.open(reference_image), num_inference_steps=STEPS,
               guidance_scale=guidance, width=W, height=H, generator=torch.Generator("cpu").manual_seed(5),
               output_type="np").images

    load_ip_adapter(ours, adapters["plus"], reference_image, scale=scale)
    got = generate(ours, guidance=guidance)
    difference = np.abs(got.pixels - want).max()
    print(f"IP-Adapter-Plus parity (scale {scale}, guidance {guidance}): max pixel difference {difference:.2e}")
    assert difference <= 1 / 255, f"max pixel difference {difference}"
    assert np.abs((got.pixels * 255).round() - (want * 255).round()).max() <= 1
    assert got.parameters[0]["ip_adapter"] == {"model": str(adapters["plus"]), "scale": scale,
                                               "image": str(reference_image)}


def test_plus_with_perturbed_attention_guidance_matches_diffusers_pag_pipeline(ours, tiny_kolors_diffusers, adapters,
                                                                              reference_image):
    from diffusers import KolorsPAGPipeline

    ref = KolorsPAGPipeline.from_pretrained(tiny_kolors_diffusers, variant="fp16", torch_dtype=torch.float32,
                                            pag_applied_layers=["mid"])
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = ref.scheduler.from_config(ours.components.scheduler.config)
    ref.load_ip_adapter(str(adapters["plus"]), subfolder="", weight_name="ip_adapter_plus_general.bin",
                        image_encoder_folder="image_encoder")
    ref.set_ip_adapter_scale(0.5)
    # diffusers' KolorsPAGPipeline (0.42) iterates the embeddings argument, not the ones it prepares from
    # ip_adapter_image, and keeps a batch axis the UNet's resampler does not take: hand it 3-D embeddings.
    embeds = [e.squeeze(1) for e in ref.prepare_ip_adapter_image_embeds(Image.open(reference_image), None, "cpu", 1,
                                                                         True)]
    want = ref(PROMPT, ip_adapter_image_embeds=embeds, num_inference_steps=STEPS, guidance_scale=5.0,
               pag_scale=2.0, width=W, height=H, generator=torch.Generator("cpu").manual_seed(5),
               output_type="np").images

    load_ip_adapter(ours, adapters["plus"], reference_image, scale=0.5)
    got = generate(ours, guidance=5.0, pag_scale=2.0)
    plain = generate(ours, guidance=5.0)
    difference = np.abs(got.pixels - want).max()
    print(f"IP-Adapter-Plus + PAG parity: max pixel difference {difference:.2e}")
    assert difference <= 1 / 255, f"max pixel difference {difference}"
    assert np.abs(got.pixels - plain.pixels).max() > 0.02  # PAG acted
    assert got.parameters[0]["pag_scale"] == 2.0 and got.parameters[0]["ip_adapter"]["scale"] == 0.5


def test_plus_has_an_effect_scale_zero_is_off_and_unload_restores(ours, adapters, reference_image):
    unet = ours.components.unet
    before_keys = set(unet.state_dict())
    before_procs = {k: type(v) for k, v in unet.attn_processors.items()}
    plain = generate(ours, guidance=5.0).pixels

    load_ip_adapter(ours, adapters["plus"], reference_image)  # default scale 0.5
    assert unet.text_encoder_hid_proj is not None and unet.config.encoder_hid_dim_type == "ip_image_proj"
    with_adapter = generate(ours, guidance=5.0).pixels
    assert np.abs(with_adapter - plain).max() > 1e-3
    other = Image.fromarray(255 - np.asarray(Image.open(reference_image)))
    load_ip_adapter(ours, adapters["plus"], other)  # the reference image matters
    with_other = generate(ours, guidance=5.0).pixels  # seed 5
    assert np.abs(with_other - with_adapter).max() > 1e-3
    two = generate(ours, guidance=5.0, num_images=2, seed=4).pixels  # a batch: rows [negative…, positive…]
    np.testing.assert_allclose(two[1], with_other[0], atol=1e-5, rtol=0)
    load_ip_adapter(ours, adapters["plus"], reference_image)
    set_ip_adapter_scale(ours, 0.0)
    np.testing.assert_allclose(generate(ours, guidance=5.0).pixels, plain, atol=1e-6, rtol=0)

    unload_ip_adapter(ours)
    assert not hasattr(unet, "text_encoder_hid_proj") and unet.config.encoder_hid_dim_type == "text_proj"
    assert set(unet.state_dict()) == before_keys
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before_procs
    assert np.array_equal(generate(ours, guidance=5.0).pixels, plain)
    load_ip_adapter(ours, adapters["plus"], reference_image)  # loads again after an unload
    assert np.array_equal(generate(ours, guidance=5.0).pixels, with_adapter)


def test_plus_safetensors_layout_loads_the_same(ours, adapters, reference_image, tmp_path):
    folder = write_tiny_ip_adapter_plus(tmp_path, safetensors=True)
    load_ip_adapter(ours, folder / "ip_adapter_plus_general.safetensors", reference_image)
    a = generate(ours).pixels
    load_ip_adapter(ours, adapters["plus"], reference_image)  # replaces the first one
    assert len(loaded_ip_adapters(ours)) == 1
    assert np.array_equal(generate(ours).pixels, a)


# --- errors ----------------------------------------------------------------------------------------------------
def test_wrong_adapters_and_inputs_are_one_line_errors(ours, adapters, reference_image, face_files, tmp_path):
    with pytest.raises(KolorsError, match="different base model: its cross-attention width is 48, the base "
                                          "model's is 32"):
        load_ip_adapter(ours, adapters["wide"], reference_image)
    with pytest.raises(KolorsError, match="reads 40-wide image features but its image encoder gives 32-wide"):
        load_ip_adapter(ours, adapters["vith"], reference_image)
    with pytest.raises(KolorsError, match="FaceID-Plus folder, not IP-Adapter-Plus: use --face-id-model"):
        load_ip_adapter(ours, adapters["face"], reference_image)
    with pytest.raises(KolorsError, match="not IP-Adapter-FaceID-Plus: use --ip-adapter-model"):
        load_face_id(ours, adapters["plus"], face_files[0], image=face_files[1])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(KolorsError, match="cannot read image"):
        load_ip_adapter(ours, adapters["plus"], bad)
    with pytest.raises(KolorsError, match="image not found"):
        load_ip_adapter(ours, adapters["plus"], tmp_path / "missing.png")
    short = tmp_path / "short.npy"
    np.save(short, np.zeros(128, np.float32))
    with pytest.raises(KolorsError, match="has 128 values, this FaceID-Plus adapter takes 512"):
        load_face_id(ours, adapters["face"], short, image=face_files[1])
    with pytest.raises(KolorsError, match="needs the face image too"):
        load_face_id(ours, adapters["face"], face_files[0])
    with pytest.raises(KolorsError, match="insightface"):  # a photo needs insightface (not installed here)
        load_face_id(ours, adapters["face"], face_files[1])
    narrow = write_tiny_face_id_plus(tmp_path, name="narrow", width=48)
    with pytest.raises(KolorsError, match=r"face-token width \(the text embedding width\) is 48, the base "
                                          r"model's is 64"):
        load_face_id(ours, narrow, face_files[0], image=face_files[1])
    broken = write_tiny_ip_adapter_plus(tmp_path, name="broken")
    (broken / "ip_adapter_plus_general.bin").write_bytes(b"\x80\x02garbage")
    with pytest.raises(KolorsError, match="is corrupt or not an IP-Adapter"):
        load_ip_adapter(ours, broken, reference_image)
    with pytest.raises(KolorsError, match="holds no IP-Adapter-Plus weights"):
        load_ip_adapter(ours, tmp_path, reference_image)
    assert loaded_ip_adapters(ours) == []
    assert ours.components.unet.config.encoder_hid_dim_type == "text_proj"


# --- FaceID-Plus -----------------------------------------------------------------------------------------------
def test_face_projection_shapes_and_shortcut():
    proj = FaceIDPlusProjection.from_state_dict({k: v.float() for k, v in face_id_state()["image_proj"].items()})
    assert (proj.num_tokens, proj.width, proj.id_dim) == (FACE_TOKENS, TEXT_HIDDEN, 512)
    features = torch.randn(2, 5, CLIP_CONFIG["hidden_size"])
    out = proj(torch.randn(2, 512), features)
    assert out.shape == (2, FACE_TOKENS, TEXT_HIDDEN)
    # the tokens attend to the features: other features, other tokens; zero input -> the learnt bias only
    assert not torch.allclose(out, proj(torch.randn(2, 512), torch.randn(2, 5, CLIP_CONFIG["hidden_size"])))
    zero = proj(torch.zeros(1, 512), torch.zeros(1, 5, CLIP_CONFIG["hidden_size"]))
    assert torch.isfinite(zero).all()


@pytest.mark.filterwarnings("ignore:You have passed a tensor as `encoder_hidden_states`")
def test_face_tokens_join_the_text_tokens_before_the_text_projection(ours, adapters, face_files):
    """The UNet call equals the official one: 256 + 6 tokens projected together, the last 6 read by to_k/v_ip."""
    load_face_id(ours, adapters["face"], face_files[0], image=face_files[1], scale=0.8)
    unet = ours.components.unet
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, H // 2, W // 2, generator=gen)
    text = torch.randn(2, 256, TEXT_HIDDEN, generator=gen)
    face = torch.randn(2, 1, FACE_TOKENS, TEXT_HIDDEN, generator=gen)
    added = {"text_embeds": torch.randn(2, TEXT_HIDDEN, generator=gen),
             "time_ids": torch.tensor([[H, W, 0, 0, H, W]] * 2).float()}
    with torch.no_grad():
        ours_out = unet(latents, 10, encoder_hidden_states=text,
                        added_cond_kwargs={**added, "image_embeds": [face]}).sample
        # the official way: concatenate, project all tokens with the text projection, processors split the last 6
        proj, kind = unet.encoder_hid_proj, unet.config.encoder_hid_dim_type
        unet.encoder_hid_proj, unet.config.encoder_hid_dim_type = unet.text_encoder_hid_proj, "text_proj"
        try:
            official = unet(latents, 10, encoder_hidden_states=torch.cat([text, face[:, 0]], dim=1),
                            added_cond_kwargs=added).sample
        finally:
            unet.encoder_hid_proj, unet.config.encoder_hid_dim_type = proj, kind
    torch.testing.assert_close(ours_out, official, atol=1e-5, rtol=1e-5)
    assert UNET_CONFIG["cross_attention_dim"] == unet.text_encoder_hid_proj.out_features


def test_face_id_generation_scale_zero_unload_and_both_adapters(ours, adapters, face_files, reference_image):
    plain = generate(ours).pixels
    load_face_id(ours, adapters["face"], face_files[0], image=face_files[1])  # default scale 0.8
    face = generate(ours)
    assert np.abs(face.pixels - plain).max() > 1e-3
    assert face.parameters[0]["face_id"] == {"model": str(adapters["face"]), "scale": 0.8,
                                             "face": str(face_files[0]), "image": str(face_files[1])}
    set_ip_adapter_scale(ours, 0.0, "face_id")
    np.testing.assert_allclose(generate(ours).pixels, plain, atol=1e-6, rtol=0)
    set_ip_adapter_scale(ours, 0.8, "face_id")

    load_ip_adapter(ours, adapters["plus"], reference_image, scale=0.5)  # both together
    both = generate(ours, guidance=1.0)
    assert set(both.parameters[0]) >= {"ip_adapter", "face_id"}
    unload_ip_adapter(ours, "face_id")
    only_plus = generate(ours, guidance=1.0).pixels
    assert np.abs(both.pixels - only_plus).max() > 1e-3
    unload_ip_adapter(ours)
    assert np.array_equal(generate(ours).pixels, plain)


# --- CLI -------------------------------------------------------------------------------------------------------
def test_cli_writes_and_replays_image_prompts(tiny_kolors_diffusers, adapters, reference_image, face_files,
                                              tmp_path, capsys):
    base = ["--model", str(tiny_kolors_diffusers), "--steps", "2", "--width", str(W), "--height", str(H),
            "--seed", "3", "--device", "cpu", "--dtype", "float32", "-q"]
    first = tmp_path / "a.png"
    assert main(["generate", PROMPT, *base, "--ip-adapter", f"{reference_image}:0.7", "--ip-adapter-model",
                 str(adapters["plus"]), "--face-id", str(face_files[0]), "--face-image", str(face_files[1]),
                 "--face-id-model", str(adapters["face"]), "-o", str(first)]) == 0
    stored = read_parameters(first)
    assert stored["ip_adapter"] == {"model": str(adapters["plus"]), "scale": 0.7, "image": str(reference_image)}
    assert stored["face_id"]["scale"] == 0.8 and stored["face_id"]["face"] == str(face_files[0])
    again = tmp_path / "b.png"
    assert main(["generate", "--from-image", str(first), "-q", "-o", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))
    assert read_parameters(again)["ip_adapter"] == stored["ip_adapter"]
    text = read_png_text(first)[PARAMETERS_CHUNK]
    assert 'IP-Adapter: "ref.png:0.7"' in text and 'FaceID: "face.npy:0.8"' in text
    redrawn = tmp_path / "d.png"  # img2img takes the same options
    assert main(["img2img", PROMPT, "--image", str(first), "--strength", "0.5", *base, "--ip-adapter",
                 str(reference_image), "--ip-adapter-model", str(adapters["plus"]), "-o", str(redrawn)]) == 0
    assert read_parameters(redrawn)["ip_adapter"]["scale"] == 0.5
    capsys.readouterr()

    assert main(["generate", PROMPT, *base, "--ip-adapter", str(reference_image)]) == 2
    assert capsys.readouterr().err.strip() == ("kolors: error: --ip-adapter needs --ip-adapter-model DIR "
                                               "(the Kwai-Kolors adapter folder)")
    assert main(["generate", PROMPT, *base, "--face-id-model", str(adapters["face"])]) == 2
    assert "--face-id-model goes with --face-id FACE[:SCALE]" in capsys.readouterr().err
    assert main(["generate", PROMPT, *base, "--ip-adapter", str(tmp_path / "nope.png"), "--ip-adapter-model",
                 str(adapters["plus"])]) == 2
    assert "image not found" in capsys.readouterr().err
    assert main(["generate", PROMPT, *base, "--ip-adapter", str(reference_image), "--ip-adapter-model",
                 str(adapters["wide"]), "-o", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cross-attention width is 48" in err, err


# --- insightface (faked: not installed here) --------------------------------------------------------------------
def _fake_insightface(monkeypatch, faces):
    import sys
    import types

    class FaceAnalysis:
        def __init__(self, name, root, providers):
            assert name == "antelopev2"

        def prepare(self, ctx_id, det_size):
            pass

        def get(self, bgr):
            return faces

    app = types.ModuleType("insightface.app")
    app.FaceAnalysis = FaceAnalysis
    monkeypatch.setitem(sys.modules, "insightface", types.ModuleType("insightface"))
    monkeypatch.setitem(sys.modules, "insightface.app", app)


def test_face_photo_uses_antelopev2_files_and_the_largest_face(ours, adapters, tmp_path, monkeypatch):
    from kolors.adapters.ip_adapter import ANTELOPEV2_FILES

    small = {"bbox": np.array([0, 0, 4, 4.0]), "embedding": np.zeros(512, np.float32)}
    large = {"bbox": np.array([10, 5, 30, 21.0]), "embedding": np.ones(512, np.float32)}
    _fake_insightface(monkeypatch, [small, large])
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.RandomState(2).rand(40, 50, 3) * 255).astype(np.uint8)).save(photo)
    root = tmp_path / "insightface"
    with pytest.raises(KolorsError, match="antelopev2 models are missing from .*: 1k3d68.onnx, 2d106det.onnx"):
        load_face_id(ours, adapters["face"], photo, insightface_root=root)
    (root / "models" / "antelopev2").mkdir(parents=True)
    for name in ANTELOPEV2_FILES:
        (root / "models" / "antelopev2" / name).write_bytes(b"")
    adapter = load_face_id(ours, adapters["face"], photo, insightface_root=root)
    assert torch.equal(adapter.face_embedding, torch.ones(1, 512))  # the largest face
    assert adapter.image.size == (20, 20)  # its square crop: 20x16 box -> 20x20 around the centre
    assert adapter.parameters() == {"model": str(adapters["face"]), "scale": 0.8, "face": str(photo)}
    _fake_insightface(monkeypatch, [])
    with pytest.raises(KolorsError, match="no face found"):
        load_face_id(ours, adapters["face"], photo, insightface_root=root)
