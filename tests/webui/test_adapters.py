"""Adapters in the request the page sends: LoRAs from the server's folder with weights, IP-Adapter and FaceID
images with models and scales, PAG, ControlNet settings — and the server's one-line error shown at its field.

The built-in model's server has no adapter folders, so the page is shown a server /info that lists some (the
rest of the API is the real server's) and the submitted request is read before it would reach the queue."""

from __future__ import annotations

import json

from .webui_page import choose_file, open_panel, scene_png

ADAPTERS = {"loras": ["ink-style.safetensors", "pixel.safetensors"], "ip_adapters": ["Kolors-IP-Adapter-Plus"],
            "face_id_models": ["Kolors-IP-Adapter-FaceID-Plus"]}
ERROR = "LoRA file not found: pixel.safetensors (put it in --lora-dir)"


def test_adapters_build_the_request_and_errors_point_at_their_field(open_page, server, shots):
    page = open_page(wait=False)
    submitted = []

    def info(route):
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), **ADAPTERS})

    def jobs(route):
        if route.request.method != "POST":
            return route.fallback()
        submitted.append(json.loads(route.request.post_data))
        route.fulfill(status=400, content_type="application/json",
                      body=json.dumps({"error": {"message": ERROR, "type": "invalid_request_error", "param": "pag_scale",
                                                 "code": "invalid_value"}}))

    page.route("**/api/v1/info", info)
    page.route("**/api/v1/jobs", jobs)
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    for panel in ("#controls-panel", "#adapters-panel", "#loras-panel", "#pag-panel"):
        open_panel(page, panel)

    page.select_option("#lora-select", "pixel.safetensors")
    page.click("#lora-add")
    page.locator("#lora-list [data-role=weight]").fill("0.6")
    choose_file(page, "#ip-adapter input[type=file]", "style.png", scene_png(64))
    page.locator("#ip-adapter [data-role=scale]").fill("0.4")
    page.wait_for_selector("#ip-adapter [data-role=preview]:not([hidden])")
    choose_file(page, "#face-id input[type=file]", "face.png", scene_png(64))
    page.wait_for_selector("#face-id [data-role=preview]:not([hidden])")
    page.fill("#pag-scale", "3")
    page.fill("#pag-layers", "mid, up_blocks.0")
    page.click("#control-add")
    card = page.locator("#controls-list fieldset").first
    card.locator("[data-role=type]").select_option("depth")
    assert not card.locator("[data-role=detect]").is_checked()  # depth: a ready map unless asked to detect
    choose_file(page, "#controls-list input[type=file]", "depth.png", scene_png(64))
    card.locator("[data-role=scale]").fill("0.5")
    page.wait_for_function("() => document.querySelector('#controls-list [data-role=map]').naturalWidth > 0")
    page.fill("#prompt", "a cat")
    page.click("#generate")
    page.wait_for_selector(".toast.error")
    shots(page, "refused")

    request = submitted[0]
    assert request["loras"] == [{"name": "pixel.safetensors", "weight": 0.6}]
    assert request["ip_adapter"]["model"] == "Kolors-IP-Adapter-Plus" and request["ip_adapter"]["scale"] == 0.4
    assert request["ip_adapter"]["image"].startswith("upload:")
    assert request["face_id"]["model"] == "Kolors-IP-Adapter-FaceID-Plus" and request["face_id"]["face"].startswith("upload:")
    assert request["pag_scale"] == 3 and request["pag_layers"] == ["mid", "up_blocks.0"]
    assert request["controls"] == [{"type": "depth", "image": request["controls"][0]["image"], "scale": 0.5, "start": 0,
                                    "end": 0.9, "detect": False}]
    assert page.locator(".toast.error .toast-detail").text_content() == ERROR
    assert page.get_attribute("#pag-scale", "aria-invalid") == "true"
    assert page.evaluate("() => document.activeElement.id") == "pag-scale"
