"""The Kolors node pack inside a real ComfyUI (the vendored snapshot, headless, CPU, one process for the module):
its nodes and inputs in /object_info, every example workflow run through POST /prompt with the built-in model,
parity with `kolors generate`, inpainting's kept pixels, cancelling, one-line node errors, stock-node interplay."""

from __future__ import annotations

import copy
import json
import re

import cv2
import numpy as np
import pytest
from PIL import Image

from comfy_server import PromptError, execution_error, status_messages
from comfy_workflows import (
    BUILTIN,
    EXAMPLES,
    FACE_EMBEDDING,
    FACE_ID_ADAPTER,
    INPAINT_IMAGE,
    MODEL_FOLDER,
    SDXL_VAE_FOLDER,
    SINGLE_FILES,
    load,
    ui_format,
    ui_to_api,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255


def run_example(comfy, name: str, **changes) -> np.ndarray:
    """Run example ``name`` (``changes``: {node id: {input: value}}); the image its Save Image node wrote."""
    _, api = load(name)
    api = copy.deepcopy(api)
    for node, inputs in changes.items():
        api[node]["inputs"].update(inputs)
    (path,) = comfy.images(comfy.run(api), "5")
    return pixels(path)


def test_every_node_is_in_object_info_with_its_declared_inputs(comfy):
    from kolors.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    info = comfy.get("/object_info")
    for name, cls in NODE_CLASS_MAPPINGS.items():
        assert name in info, f"{name} is missing: {comfy.log_tail()}"
        node = info[name]
        assert (node["display_name"], node["category"]) == (NODE_DISPLAY_NAME_MAPPINGS[name], cls.CATEGORY)
        assert node["output"] == list(cls.RETURN_TYPES) and node["output_name"] == list(cls.RETURN_NAMES)
        declared = cls.INPUT_TYPES()
        for category in ("required", "optional"):
            ours, theirs = declared.get(category, {}), node["input"].get(category, {})
            assert list(theirs) == list(ours), (name, category)
            for input_name, spec in ours.items():
                got, options = theirs[input_name], spec[1] if len(spec) > 1 else {}
                assert isinstance(got[0], list) if isinstance(spec[0], list) else got[0] == spec[0], input_name
                for key in ("default", "min", "max", "step", "control_after_generate", "multiline"):
                    if key in options:
                        assert got[1][key] == options[key], (name, input_name, key)
    # The model folders ComfyUI users keep, found in this ComfyUI's models/ (conftest puts them there).
    options = {name: info[name]["input"]["required"] for name in info}
    assert options["KolorsModelLoader"]["model"][0] == [BUILTIN, MODEL_FOLDER, SDXL_VAE_FOLDER]
    assert options["KolorsLoRA"]["lora_name"][0] == ["kolors_example_lora.safetensors"]
    assert options["KolorsIPAdapter"]["ipadapter"][0] == ["Kolors-IP-Adapter-Plus"]
    assert options["KolorsFaceID"]["ipadapter"][0] == [FACE_ID_ADAPTER]
    assert options["KolorsControlNetLoader"]["controlnet"][0] == ["built-in canny (kolors-shapes-small)"]
    single = options["KolorsSingleFileLoader"]
    assert [single[k][0][1:] for k in ("unet", "text_encoder", "vae")] == [[f] for f in SINGLE_FILES.values()]
    assert info["KolorsSampler"]["input"]["required"]["seed"][1]["control_after_generate"] is True


def test_shipped_examples_are_current_and_their_two_formats_agree(comfy):
    info = comfy.get("/object_info")
    for name, example in EXAMPLES.items():
        ui, api = load(name)
        assert ui == json.loads(json.dumps(ui_format(example))), f"{name}: run tests/comfyui/comfy_workflows.py"
        plain = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}
        assert ui_to_api(ui, info) == plain, name


@pytest.mark.parametrize("guidance_stop", [None, 0.4])
def test_text_to_image_workflow_equals_kolors_generate(comfy, tmp_path, monkeypatch, guidance_stop):
    """The example as shipped (guidance_stop -1: the model's default), and with the sampler's guidance_stop set."""
    from kolors.cli.main import main

    _, api = load("text_to_image")
    image = run_example(comfy, "text_to_image", **({"4": {"guidance_stop": guidance_stop}} if guidance_stop else {}))
    sampler, out = api["4"]["inputs"], tmp_path / "cli.png"
    monkeypatch.delenv("KOLORS_MODEL", raising=False)
    stop = ["--guidance-stop", str(guidance_stop)] if guidance_stop else []
    assert main(["generate", api["2"]["inputs"]["text"], "--negative-prompt", api["3"]["inputs"]["text"], "--seed",
                 str(sampler["seed"]), "--guidance", str(sampler["guidance"]), *stop, "--device", "cpu", "--output",
                 str(out), "--quiet"]) == 0
    expected = pixels(out)
    assert image.shape == expected.shape == (128, 128, 3)
    assert np.abs(image - expected).max() <= 1 / 255 + 1e-6
    assert image.std() > 0.05  # a picture, not a blank


def test_inpaint_workflow_keeps_the_pixels_outside_the_mask(comfy, tmp_path):
    image = run_example(comfy, "inpaint")
    source = np.asarray(Image.open(comfy.base / "input" / INPAINT_IMAGE))
    redraw = source[:, :, 3] < 128
    feather = load("inpaint")[1]["4"]["inputs"]["feather"]
    reach = 2 * (feather + 1) + 1  # the blend ramp reaches `feather` pixels out
    near = cv2.dilate(redraw.astype(np.uint8), np.ones((reach, reach), np.uint8)) > 0
    assert np.array_equal(image[~near], source[:, :, :3][~near] / np.float32(255))  # untouched, to the bit
    assert np.abs(image[redraw] - source[:, :, :3][redraw] / 255).mean() > 0.05  # the hole is redrawn


def test_lora_example_changes_the_text_to_image_picture(comfy):
    assert np.abs(run_example(comfy, "lora") - run_example(comfy, "text_to_image")).mean() > 0.01


@pytest.mark.parametrize("name", ["image_to_image", "controlnet_canny", "ip_adapter"])
def test_image_conditioned_examples_run(comfy, name):
    image = run_example(comfy, name)
    assert image.shape == (128, 128, 3) and image.std() > 0.02
    plain = run_example(comfy, "text_to_image", **{"4": {"seed": load(name)[1]["4"]["inputs"]["seed"]}})
    assert np.abs(image - plain).mean() > 0.01  # the image input steers the picture


def test_canny_map_node_makes_an_edge_map(comfy):
    _, api = load("controlnet_canny")
    (path,) = comfy.images(comfy.run(api), "10")
    edges = np.asarray(Image.open(path).convert("L"))
    assert set(np.unique(edges)) == {0, 255} and 0.01 < (edges == 255).mean() < 0.3


def test_cancel_stops_the_sampler_within_a_step(comfy):
    _, api = load("text_to_image")
    api = copy.deepcopy(api)
    api["4"]["inputs"].update(steps=1000, seed=987654)
    socket = comfy.websocket()
    try:
        prompt_id = comfy.submit(api)
        seen, cancelled_at, end = [], None, None
        while end is None:
            message = socket.recv()
            if isinstance(message, bytes):
                continue
            message = json.loads(message)
            data = message.get("data", {})
            if data.get("prompt_id") != prompt_id:
                continue
            if message["type"] == "progress" and data.get("node") == "4":
                seen.append(data["value"])
                if cancelled_at is None and data["value"] >= 3:
                    comfy.post("/interrupt")
                    cancelled_at = data["value"]
            elif message["type"] in ("execution_interrupted", "execution_error", "execution_success"):
                end = message["type"]
    finally:
        socket.close()
    assert end == "execution_interrupted"
    assert seen == sorted(seen) and cancelled_at is not None and max(seen) <= cancelled_at + 1 < 1000
    kinds = [kind for kind, _ in status_messages(comfy.wait(prompt_id))]
    assert "execution_interrupted" in kinds


def test_bad_inputs_give_one_line_node_errors_and_comfyui_stays_up(comfy):
    _, api = load("text_to_image")
    cases = [({"1": {"path": "/nonexistent/Kolors"}}, "model folder not found: /nonexistent/Kolors"),
             ({"4": {"width": 100}}, "width 100 is not a multiple of 8: try 96")]
    for changes, message in cases:
        broken = copy.deepcopy(api)
        for node, inputs in changes.items():
            broken[node]["inputs"].update(inputs)
        with pytest.raises(PromptError) as err:
            comfy.submit(broken)
        assert any(m.endswith(f" - {message}") for m in err.value.messages()), err.value.messages()

    # An error while running: ComfyUI's own VAE nodes cannot take the built-in model's small VAE.
    stock = copy.deepcopy(api)
    stock["6"] = {"class_type": "KolorsStockVAE", "inputs": {"model": ["1", 0]}}
    stock["7"] = {"class_type": "VAEDecode", "inputs": {"samples": ["4", 1], "vae": ["6", 0]}}
    stock["5"]["inputs"]["images"] = ["7", 0]
    entry = comfy.wait(comfy.submit(stock))
    error = execution_error(entry)
    message = error["exception_message"].strip()  # ComfyUI ends it with a line break
    assert error["node_type"] == "KolorsStockVAE" and "\n" not in message
    assert message.startswith("this model's VAE is not the SDXL VAE ComfyUI's VAE nodes load "
                                                 "(block_out_channels is [16, 32, 64, 64]")
    assert message.endswith("use Kolors VAE Decode / Kolors VAE Encode instead")

    assert comfy.alive
    assert run_example(comfy, "text_to_image").shape == (128, 128, 3)


def test_single_file_loader_and_model_folder_give_the_built_in_models_picture(comfy):
    expected = run_example(comfy, "text_to_image")
    single = {"class_type": "KolorsSingleFileLoader",
              "inputs": {"unet": SINGLE_FILES["unet"], "text_encoder": SINGLE_FILES["text_encoders"],
                         "vae": SINGLE_FILES["vae"], "config": BUILTIN, "mode": "exact",
                         "text_encoder_quant": "mode default", "dtype": "auto", "device": "auto"}}
    _, api = load("text_to_image")
    for loader in (single, {"class_type": "KolorsModelLoader", "inputs": api["1"]["inputs"] | {"model": MODEL_FOLDER}}):
        changed = copy.deepcopy(api)
        changed["1"] = loader
        (path,) = comfy.images(comfy.run(changed), "5")
        assert np.array_equal(pixels(path), expected), loader["class_type"]


def test_images_and_latents_go_through_stock_nodes(comfy):
    _, api = load("text_to_image")
    graph = copy.deepcopy(api)
    del graph["5"]
    graph.update({
        "10": {"class_type": "LoadImage", "inputs": {"image": INPAINT_IMAGE}},
        "11": {"class_type": "ImageScale", "inputs": {"image": ["10", 0], "upscale_method": "bilinear",
                                                      "width": 96, "height": 96, "crop": "disabled"}},
        "4": {**api["4"], "inputs": api["4"]["inputs"] | {"image": ["11", 0], "strength": 0.5}},
        "12": {"class_type": "LatentUpscaleBy",
               "inputs": {"samples": ["4", 1], "upscale_method": "nearest-exact", "scale_by": 2.0}},
        "13": {**api["4"], "inputs": api["4"]["inputs"] | {"latent": ["12", 0], "strength": 0.4}},
        "14": {"class_type": "KolorsVAEDecode", "inputs": {"model": ["1", 0], "samples": ["13", 1]}},
        "15": {"class_type": "KolorsVAEEncode", "inputs": {"model": ["1", 0], "pixels": ["10", 0]}},
        "16": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["15", 0], "mask": ["10", 1]}},
        "17": {**api["4"], "inputs": api["4"]["inputs"] | {"latent": ["16", 0], "strength": 1.0}},
        "20": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "stock_a"}},
        "21": {"class_type": "SaveImage", "inputs": {"images": ["13", 0], "filename_prefix": "stock_b"}},
        "22": {"class_type": "SaveImage", "inputs": {"images": ["14", 0], "filename_prefix": "stock_c"}},
        "23": {"class_type": "SaveImage", "inputs": {"images": ["17", 0], "filename_prefix": "stock_d"}},
    })
    entry = comfy.run(graph)
    (small,), (large,), (decoded,), (masked,) = (comfy.images(entry, n) for n in ("20", "21", "22", "23"))
    assert pixels(small).shape == (96, 96, 3) and pixels(large).shape == (192, 192, 3)
    assert np.abs(pixels(decoded) - pixels(large)).max() <= 1 / 255 + 1e-6  # the LATENT is what the IMAGE shows
    source = np.asarray(Image.open(comfy.base / "input" / INPAINT_IMAGE))
    keep = source[:, :, 3] == 255
    kept = np.abs(pixels(masked)[keep] - source[:, :, :3][keep] / 255).mean()
    redrawn = np.abs(pixels(masked)[~keep] - source[:, :, :3][~keep] / 255).mean()
    assert kept < 0.5 * redrawn  # a noise mask on a LATENT inpaints


def test_face_id_and_pag_apply_to_the_model(comfy):
    """FaceID and PAG each change the picture, and PAG still applies to a model FaceID changed. Guidance runs on
    every step and PAG perturbs the down blocks: with the built-in model's default guidance (the first 30% of the
    steps) and PAG's default layer (mid) the two together changed v5's picture by a mean of 0.001, too little to tell
    a node that applies from one that does not (the mid block's attention barely matters to this small UNet)."""
    _, api = load("text_to_image")
    plain = run_example(comfy, "text_to_image", **{"4": {"guidance_stop": 1.0}})

    def run(*nodes: str) -> np.ndarray:
        graph = copy.deepcopy(api)
        graph["4"]["inputs"]["guidance_stop"] = 1.0
        if "7" in nodes:
            graph["6"] = {"class_type": "LoadImage", "inputs": {"image": "kolors_shapes.png"}}
            graph["7"] = {"class_type": "KolorsFaceID", "inputs": {
                "model": ["1", 0], "ipadapter": FACE_ID_ADAPTER, "face": ["6", 0], "scale": 0.8,
                "embedding": str(comfy.base / "input" / FACE_EMBEDDING)}}
        if "8" in nodes:
            graph["8"] = {"class_type": "KolorsPAG", "inputs": {"model": ["7" if "7" in nodes else "1", 0],
                                                               "scale": 3.0, "layers": "down"}}
        graph["4"]["inputs"]["model"] = [nodes[-1], 0]
        (path,) = comfy.images(comfy.run(graph), "5")
        return pixels(path)

    face_id, pag, both = run("7"), run("8"), run("7", "8")
    # measured with the API (mean of 0-1 pixels): FaceID 0.10 and PAG 0.16 from the plain picture
    assert np.abs(face_id - plain).mean() > 0.01 and np.abs(pag - plain).mean() > 0.01
    assert np.abs(both - face_id).mean() > 0.01


def test_text_encode_reports_how_much_of_the_prompt_the_model_reads(comfy):
    def report(text: str) -> str:
        graph = {"1": {"class_type": "KolorsModelLoader", "inputs": load("text_to_image")[1]["1"]["inputs"]},
                 "2": {"class_type": "KolorsTextEncode", "inputs": {"model": ["1", 0], "text": text}},
                 "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}}}
        (text,) = comfy.run(graph)["outputs"]["3"]["text"]
        return text

    assert re.fullmatch(r"\d+ of 256 tokens", report("a red circle")), report("a red circle")
    long = report("一个红色的圆形和一个蓝色的正方形，" * 40)
    assert re.fullmatch(r"\d+ tokens: the last \d+ do not fit in the model's 256-token context and are dropped "
                        r"\(shorten the prompt\)", long), long


def test_stock_vae_decode_reads_kolors_latents_when_the_vae_is_the_sdxl_one(comfy):
    _, api = load("text_to_image")
    graph = copy.deepcopy(api)
    graph["1"]["inputs"]["model"] = SDXL_VAE_FOLDER
    graph["4"]["inputs"]["steps"] = 2
    graph.update({
        "6": {"class_type": "KolorsStockVAE", "inputs": {"model": ["1", 0]}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 1], "vae": ["6", 0]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "stock_vae"}},
    })
    entry = comfy.run(graph)
    (ours,), (stock,) = comfy.images(entry, "5"), comfy.images(entry, "8")
    assert pixels(ours).std() > 0.01  # (random VAE weights: a pattern, not a picture)
    assert np.abs(pixels(stock) - pixels(ours)).max() <= 2 / 255  # ComfyUI's VAE decodes our LATENT the same


def test_loader_quantises_the_text_encoder_with_torchao(comfy):
    plain = run_example(comfy, "text_to_image")
    quantised = run_example(comfy, "text_to_image", **{"1": {"text_encoder_quant": "int8"}})
    assert quantised.shape == plain.shape and quantised.std() > 0.05
    assert np.abs(quantised - plain).mean() < 0.1  # int8 weights: close to the full-precision picture
