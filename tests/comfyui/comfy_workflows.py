"""The pack's example workflows, written from one description in both of ComfyUI's formats, and read back.

``python tests/comfyui/comfy_workflows.py`` (re)writes ``comfyui/example_workflows/<name>.json`` (the UI format the
page loads and saves: nodes with positions, links, widget values) and ``comfyui/example_workflows/api/<name>.json``
(the API format ``POST /prompt`` takes), plus the example input images in ``comfyui/example_workflows/input/``.
:func:`ui_to_api` turns a UI-format workflow into the API format with a running ComfyUI's ``/object_info``, as its
page does; the tests check that it gives the shipped API files.

The examples run with the built-in model. The IP-Adapter and LoRA examples name files users put in ComfyUI's
models/ipadapter/Kolors-IP-Adapter-Plus/ and models/loras/ (the tests create small stand-ins).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO / "comfyui" / "example_workflows"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
IMAGE_NODE_HEIGHT = 320  # Load / Save / Preview Image: room for the picture
BUILTIN = "built-in (kolors-shapes-small)"
BUILTIN_CANNY = "built-in canny (kolors-shapes-small)"
SHAPES_IMAGE = "kolors_shapes.png"  # a red square and a blue circle on white, 128x128
INPAINT_IMAGE = "kolors_inpaint.png"  # the same with a transparent hole (the mask) over the circle
EXAMPLE_LORA = "kolors_example_lora.safetensors"
EXAMPLE_IP_ADAPTER = "Kolors-IP-Adapter-Plus"
# Files the tests put in ComfyUI's models/ besides those: the built-in model as single files and as a folder.
SINGLE_FILES = {"unet": "kolors_shapes_unet.safetensors", "text_encoders": "kolors_shapes_chatglm.safetensors",
                "vae": "kolors_shapes_vae.safetensors"}
MODEL_FOLDER = "Kolors-shapes"
SDXL_VAE_FOLDER = "Kolors-shapes-sdxl-vae"  # the built-in model with a VAE of the SDXL VAE's architecture
FACE_ID_ADAPTER = "Kolors-IP-Adapter-FaceID-Plus"
FACE_EMBEDDING = "kolors_face_embedding.npy"  # in input/

# Stock ComfyUI nodes the examples use: (socket inputs, widget names, outputs); LoadImage's image widget has an
# upload button, saved as an extra widget value "image".
STOCK = {
    "LoadImage": ([], ["image", "upload"], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "SaveImage": ([("images", "IMAGE")], ["filename_prefix"], []),
    "PreviewImage": ([("images", "IMAGE")], [], []),
}


def _loader() -> dict:
    return {"class_type": "KolorsModelLoader", "inputs": {"model": BUILTIN}}


def _encode(text: str, model: list = ["1", 0]) -> dict:  # noqa: B006 - never mutated
    return {"class_type": "KolorsTextEncode", "inputs": {"model": model, "text": text}}


def _sampler(seed: int, model: list = ["1", 0], **inputs: Any) -> dict:  # noqa: B006 - never mutated
    return {"class_type": "KolorsSampler", "inputs": {"model": model, "positive": ["2", 0], "negative": ["3", 0],
                                                      "seed": seed, **inputs}}


def _save(prefix: str, images: list) -> dict:
    return {"class_type": "SaveImage", "inputs": {"images": images, "filename_prefix": prefix}}


def _load_image(name: str) -> dict:
    return {"class_type": "LoadImage", "inputs": {"image": name}}


NEGATIVE = "blurry, low quality"
EXAMPLES: dict[str, dict[str, dict]] = {
    "text_to_image": {
        "1": _loader(),
        "2": _encode("a red circle and a blue square on a white background"),
        "3": _encode(NEGATIVE),
        "4": _sampler(42),
        "5": _save("kolors_text_to_image", ["4", 0]),
    },
    "image_to_image": {
        "1": _loader(),
        "2": _encode("一个黄色的正方形和一个绿色的圆形，白色背景"),
        "3": _encode(NEGATIVE),
        "6": _load_image(SHAPES_IMAGE),
        "4": _sampler(7, image=["6", 0], strength=0.6),
        "5": _save("kolors_image_to_image", ["4", 0]),
    },
    "inpaint": {
        "1": _loader(),
        "2": _encode("a yellow triangle"),
        "3": _encode(NEGATIVE),
        "6": _load_image(INPAINT_IMAGE),
        "4": _sampler(3, image=["6", 0], mask=["6", 1], feather=4),
        "5": _save("kolors_inpaint", ["4", 0]),
    },
    "controlnet_canny": {
        "1": _loader(),
        "2": _encode("a green square and a yellow circle on a black background"),
        "3": _encode(NEGATIVE),
        "6": _load_image(SHAPES_IMAGE),
        "7": {"class_type": "KolorsCannyMap", "inputs": {"image": ["6", 0]}},
        "8": {"class_type": "KolorsControlNetLoader", "inputs": {"controlnet": BUILTIN_CANNY}},
        "9": {"class_type": "KolorsApplyControlNet",
              "inputs": {"conditioning": ["2", 0], "controlnet": ["8", 0], "image": ["7", 0]}},
        "4": _sampler(5, guidance=6.0, positive=["9", 0]),
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
        "5": _save("kolors_controlnet_canny", ["4", 0]),
    },
    "ip_adapter": {
        "1": _loader(),
        "2": _encode("a picture in the style of the reference"),
        "3": _encode(NEGATIVE),
        "6": _load_image(SHAPES_IMAGE),
        "7": {"class_type": "KolorsIPAdapter",
              "inputs": {"model": ["1", 0], "ipadapter": EXAMPLE_IP_ADAPTER, "image": ["6", 0], "scale": 0.5}},
        "4": _sampler(11, model=["7", 0]),
        "5": _save("kolors_ip_adapter", ["4", 0]),
    },
    "lora": {
        "1": _loader(),
        "7": {"class_type": "KolorsLoRA", "inputs": {"model": ["1", 0], "lora_name": EXAMPLE_LORA, "strength": 0.8}},
        "2": _encode("a red circle and a blue square on a white background", model=["7", 0]),
        "3": _encode(NEGATIVE, model=["7", 0]),
        "4": _sampler(42, model=["7", 0]),
        "5": _save("kolors_lora", ["4", 0]),
    },
}


# --- node definitions -------------------------------------------------------------------------------------------
def _is_widget(spec: list | tuple) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def _definition(class_type: str) -> tuple[list, list[tuple[str, Any]], list]:
    """(socket inputs [(name, type)], widgets [(name, default)], outputs [(name, type)]) of a node."""
    if class_type in STOCK:
        sockets, widgets, outputs = STOCK[class_type]
        return sockets, [(w, None) for w in widgets], outputs
    from kolors.comfyui import NODE_CLASS_MAPPINGS

    cls = NODE_CLASS_MAPPINGS[class_type]
    declared = cls.INPUT_TYPES()
    sockets, widgets = [], []
    for category in ("required", "optional"):
        for name, spec in declared.get(category, {}).items():
            if _is_widget(spec):
                options = spec[1] if len(spec) > 1 else {}
                default = options.get("default", spec[0][0] if isinstance(spec[0], list) and spec[0] else None)
                widgets.append((name, default))
                if options.get("control_after_generate"):
                    widgets.append(("control_after_generate", "fixed"))
            else:
                sockets.append((name, spec[0]))
    names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
    return sockets, widgets, list(zip(names, cls.RETURN_TYPES))


def _title(class_type: str) -> str:
    from kolors.comfyui import NODE_DISPLAY_NAME_MAPPINGS

    return NODE_DISPLAY_NAME_MAPPINGS.get(class_type, {"LoadImage": "Load Image", "SaveImage": "Save Image",
                                                       "PreviewImage": "Preview Image"}.get(class_type, class_type))


# --- writing ----------------------------------------------------------------------------------------------------
def api_format(example: dict[str, dict]) -> dict[str, dict]:
    """The API prompt: every widget value (defaults filled in, as the page sends them) and the links."""
    prompt = {}
    for node_id, node in example.items():
        sockets, widgets, _ = _definition(node["class_type"])
        given = node["inputs"]
        inputs = {}
        for name, default in widgets:
            if name in ("control_after_generate", "upload"):
                continue
            inputs[name] = given.get(name, default)
        for name, _type in sockets:
            if name in given:
                inputs[name] = given[name]
        prompt[node_id] = {"class_type": node["class_type"], "inputs": inputs,
                           "_meta": {"title": _title(node["class_type"])}}
    return prompt


def _depths(example: dict[str, dict]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def of(node_id: str) -> int:
        if node_id not in depth:
            links = [v[0] for v in example[node_id]["inputs"].values() if isinstance(v, list)]
            depth[node_id] = 1 + max((of(s) for s in links), default=-1)
        return depth[node_id]

    for node_id in example:
        of(node_id)
    return depth


def ui_format(example: dict[str, dict]) -> dict[str, Any]:
    """The page's workflow: nodes laid out left to right by depth, their sockets, links and widget values."""
    depth = _depths(example)
    column_end: dict[int, int] = {}  # where the next node of a column goes
    nodes, links = [], []
    outputs_of: dict[str, list] = {}
    order = sorted(example, key=lambda i: (depth[i], int(i)))
    for node_id in order:
        node = example[node_id]
        sockets, widgets, outputs = _definition(node["class_type"])
        height = IMAGE_NODE_HEIGHT if node["class_type"] in STOCK else 50 + 22 * (len(sockets) + len(widgets))
        top = column_end.get(depth[node_id], 40)
        column_end[depth[node_id]] = top + height + 60
        inputs = []
        for name, type_ in sockets:
            link = None
            source = node["inputs"].get(name)
            if isinstance(source, list):
                link = len(links) + 1
                links.append([link, int(source[0]), source[1], int(node_id), len(inputs), type_])
                outputs_of.setdefault(source[0], []).append((source[1], link))
            inputs.append({"name": name, "type": type_, "link": link})
        values = []
        for name, default in widgets:
            if name == "upload":
                values.append("image")
            elif name == "control_after_generate":
                values.append("fixed")
            else:
                values.append(node["inputs"].get(name, default))
        nodes.append({"id": int(node_id), "type": node["class_type"], "pos": [40 + 380 * depth[node_id], top],
                      "size": [340, height], "flags": {},
                      "order": order.index(node_id), "mode": 0, "inputs": inputs,
                      "outputs": [{"name": n, "type": t, "links": [], "slot_index": i}
                                  for i, (n, t) in enumerate(outputs)],
                      "title": _title(node["class_type"]),
                      "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": values})
    for node in nodes:
        for slot, link in outputs_of.get(str(node["id"]), []):
            node["outputs"][slot]["links"].append(link)
    return {"last_node_id": max(int(i) for i in example), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
            "version": 0.4}


# --- reading (as ComfyUI's page does) ---------------------------------------------------------------------------
def ui_to_api(workflow: dict[str, Any], object_info: dict[str, Any]) -> dict[str, dict]:
    """The API prompt of a UI-format workflow, with the node definitions of ``/object_info``."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        info = object_info[node["type"]]["input"]
        inputs: dict[str, Any] = {}
        values = iter(node.get("widgets_values", []))
        for category in ("required", "optional"):
            for name, spec in info.get(category, {}).items():
                if not _is_widget(spec):
                    continue
                inputs[name] = next(values)
                options = spec[1] if len(spec) > 1 else {}
                if options.get("control_after_generate") or options.get("image_upload"):
                    next(values)  # the extra widget (control after generate; the upload button)
        for socket in node["inputs"]:
            if socket.get("link") is not None:
                link = links[socket["link"]]
                inputs[socket["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def load(name: str) -> tuple[dict, dict]:
    """The shipped (UI, API) workflows of example ``name``."""
    ui = json.loads((EXAMPLES_DIR / f"{name}.json").read_text(encoding="utf-8"))
    api = json.loads((EXAMPLES_DIR / "api" / f"{name}.json").read_text(encoding="utf-8"))
    return ui, api


def write_input_images(folder: Path) -> None:
    """The example input images: a rendered scene, and the same with a transparent hole over its circle."""
    import numpy as np
    from PIL import Image

    from kolors.data.shapes import Scene, Shape, relation_of, render

    shapes = (Shape(shape="square", colour="red", size="large", position="top-left"),
              Shape(shape="circle", colour="blue", size="medium", position="bottom-right"))
    scene = Scene(shapes=shapes, background="white", kind="pair", relation=relation_of(*shapes))
    picture = render(scene, 128)
    folder.mkdir(parents=True, exist_ok=True)
    picture.save(folder / SHAPES_IMAGE)
    alpha = np.full((128, 128), 255, np.uint8)
    alpha[72:124, 72:124] = 0  # transparent = redraw (ComfyUI's mask is 1 - alpha)
    rgba = np.dstack([np.asarray(picture), alpha])
    Image.fromarray(rgba, "RGBA").save(folder / INPAINT_IMAGE)


def write_all() -> None:
    (EXAMPLES_DIR / "api").mkdir(parents=True, exist_ok=True)
    for name, example in EXAMPLES.items():
        for path, data in ((EXAMPLES_DIR / f"{name}.json", ui_format(example)),
                           (EXAMPLES_DIR / "api" / f"{name}.json", api_format(example))):
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_input_images(EXAMPLES_DIR / "input")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    write_all()
    print(f"wrote {len(EXAMPLES)} examples to {EXAMPLES_DIR}")
