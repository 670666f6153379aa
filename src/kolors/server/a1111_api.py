"""AUTOMATIC1111's ``/sdapi/v1`` API (what Open WebUI, SillyTavern, bots and the ``webuiapi`` client call):
txt2img, img2img (a ``mask`` makes it inpainting; white = repaint, ``inpainting_mask_invert`` flips it), progress,
interrupt, samplers, schedulers, sd-models, options, scripts. Answers carry ``images`` (base64 PNGs with the
parameters text), ``parameters`` (the request) and ``info`` (a JSON string), as A1111's do."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ..metadata import A1111_SAMPLERS, format_parameters, scheduler_from_a1111
from ..version import __version__
from .api_errors import ApiError
from .api_inputs import REQUEST_FIELDS, base64_bytes, inverted_mask, upload
from .jobqueue import Job
from .service import Service, service_of

SAMPLERS = sorted({name for name, _ in A1111_SAMPLERS.values()})
ALIASES = {"Euler": ["k_euler"], "Euler a": ["k_euler_a"], "DPM++ 2M": ["k_dpmpp_2m"], "DDIM": [], "UniPC": []}
# A1111 fields with a Kolors meaning of their own; every other A1111 field is accepted and has no effect.
_A1111_FIELDS = {"prompt", "negative_prompt", "seed", "sampler_name", "sampler_index", "scheduler", "batch_size",
                 "n_iter", "steps", "cfg_scale", "width", "height", "denoising_strength", "init_images", "mask",
                 "mask_blur", "inpainting_mask_invert"}
# Kolors options that may ride along as extra fields (their names are not A1111's).
_KOLORS_EXTRAS = REQUEST_FIELDS - {"prompt", "negative_prompt", "seed", "scheduler", "steps", "width", "height",
                                   "num_images", "init_image", "mask", "strength", "guidance", "task"}


class Txt2Img(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"prompt": "a red circle", "steps": 20, "cfg_scale": 5, "width": 128, "height": 128, "seed": 42}]})
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int = Field(1, ge=1)
    n_iter: int = Field(1, ge=1)
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    denoising_strength: float | None = None
    send_images: bool = True


class Img2Img(Txt2Img):
    init_images: list[str] = Field(default_factory=list)
    mask: str | None = None
    mask_blur: int | None = None
    inpainting_mask_invert: int = 0
    include_init_images: bool = False


def router(auth: Any) -> APIRouter:
    api = APIRouter(prefix="/sdapi/v1", tags=["automatic1111"], dependencies=[Depends(auth)])

    @api.post("/txt2img")
    async def txt2img(body: Txt2Img, request: Request) -> dict[str, Any]:
        service = service_of(request)
        native = _native(body)
        return await _generate(service, body, native)

    @api.post("/img2img")
    async def img2img(body: Img2Img, request: Request) -> dict[str, Any]:
        service = service_of(request)
        if not body.init_images:
            raise ApiError(422, "init_images is empty: send the image to redraw (base64)", param="init_images")
        data = base64_bytes(body.init_images[0], "init_images[0]")
        native = _native(body)
        native["init_image"], _ = await run_in_threadpool(upload, service.uploads, data, "init_images[0]")
        native["strength"] = body.denoising_strength if body.denoising_strength is not None else 0.75
        if body.mask:
            mask = base64_bytes(body.mask, "mask")
            if body.inpainting_mask_invert:
                mask = await run_in_threadpool(inverted_mask, await run_in_threadpool(_checked, service, mask))
            native["mask"], _ = await run_in_threadpool(upload, service.uploads, mask, "mask")
            native["resize_mask"] = True
            if body.mask_blur is not None:
                native["feather"] = max(0, body.mask_blur)
        return await _generate(service, body, native)

    @api.get("/progress")
    async def progress(request: Request, skip_current_image: bool = False) -> dict[str, Any]:
        """The job running now (on this server): fraction done, ETA, its step."""
        return await run_in_threadpool(_progress, service_of(request), skip_current_image)

    @api.post("/interrupt")
    async def interrupt(request: Request) -> dict[str, Any]:
        """Stop the jobs running on this server at their next step."""
        service = service_of(request)
        for job_id in service.events.running_here():
            await service.cancel(job_id)
        return {}

    @api.post("/skip")
    async def skip(request: Request) -> dict[str, Any]:
        return await interrupt(request)

    @api.get("/samplers")
    async def samplers() -> list[dict[str, Any]]:
        return [{"name": name, "aliases": ALIASES.get(name, []), "options": {}} for name in SAMPLERS]

    @api.get("/schedulers")
    async def schedulers() -> list[dict[str, Any]]:
        return [{"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1, "need_inner_model":
                 False}, {"name": "karras", "label": "Karras", "aliases": None, "default_rho": 7.0,
                          "need_inner_model": False}]

    @api.get("/sd-models")
    async def sd_models(request: Request) -> list[dict[str, Any]]:
        name = _model_name(service_of(request))
        return [{"title": name, "model_name": name, "hash": None, "sha256": None, "filename": name, "config": None}]

    @api.get("/options")
    async def get_options(request: Request) -> dict[str, Any]:
        return dict(service_of(request).options)

    @api.post("/options")
    async def set_options(request: Request) -> None:
        """Accepted and remembered (a client's ``sd_model_checkpoint`` choice changes nothing: one model)."""
        try:
            values = await request.json()
        except ValueError:
            raise ApiError(422, "the body is not valid JSON: send an object of option names and values") from None
        if not isinstance(values, dict):
            raise ApiError(422, "options must be a JSON object of option names and values")
        service_of(request).options.update({str(k)[:100]: v for k, v in list(values.items())[:200]})
        return None

    @api.get("/scripts")
    async def scripts() -> dict[str, list[str]]:
        return {"txt2img": [], "img2img": []}

    @api.get("/loras")
    async def loras(request: Request) -> list[dict[str, Any]]:
        from .references import References

        names = References.names(service_of(request).settings.lora_dir, files=True)
        return [{"name": n.removesuffix(".safetensors"), "alias": n.removesuffix(".safetensors"), "path": n,
                 "metadata": {}} for n in names]

    return api


# --- requests and answers --------------------------------------------------------------------------------------
def _native(body: Txt2Img) -> dict[str, Any]:
    native: dict[str, Any] = {"prompt": body.prompt, "num_images": body.batch_size * body.n_iter}
    if body.negative_prompt:
        native["negative_prompt"] = body.negative_prompt
    if body.seed not in (None, -1):
        native["seed"] = body.seed
    sampler = body.sampler_name or body.sampler_index
    if sampler:
        scheduler = scheduler_from_a1111(sampler, body.scheduler)
        if scheduler is None:
            raise ApiError(422, f"sampler '{sampler[:40]}' not found: use one of {', '.join(SAMPLERS)}",
                           param="sampler_name")
        native["scheduler"] = scheduler
    for ours, theirs in (("steps", "steps"), ("guidance", "cfg_scale"), ("width", "width"), ("height", "height")):
        if getattr(body, theirs) is not None:
            native[ours] = getattr(body, theirs)
    for key, value in (body.model_extra or {}).items():
        if key in _KOLORS_EXTRAS:
            native[key] = value
    return native


def _checked(service: Service, data: bytes) -> bytes:
    service.storage.check_image(data, "mask")
    return data


async def _generate(service: Service, body: Txt2Img, native: dict[str, Any]) -> dict[str, Any]:
    job = await service.submit_async(native, "a1111")
    job = await service.wait(job.id)
    if job.status == "failed":
        raise ApiError(400 if not (job.error or "").startswith("internal") else 500,
                       f"generation failed: {job.error}", code="generation_failed")
    images = []
    if job.status == "succeeded" and body.send_images:
        for i in range(len(job.results or [])):
            raw = await run_in_threadpool(service.encoded, job, i, "png")
            images.append(base64.b64encode(raw).decode())
    return {"images": images, "parameters": body.model_dump(), "info": json.dumps(_info(service, job, body))}


def _info(service: Service, job: Job, body: Txt2Img) -> dict[str, Any]:
    records = [r["parameters"] for r in job.results or []]
    first = records[0] if records else {}
    sampler, _ = A1111_SAMPLERS.get(first.get("scheduler") or "default", ("Euler", None))
    return {
        "prompt": body.prompt, "all_prompts": [r.get("prompt") for r in records],
        "negative_prompt": body.negative_prompt, "all_negative_prompts": [r.get("negative_prompt") or ""
                                                                           for r in records],
        "seed": first.get("seed", body.seed), "all_seeds": [r.get("seed") for r in records],
        "subseed": -1, "all_subseeds": [-1 for _ in records], "subseed_strength": 0,
        "width": first.get("width"), "height": first.get("height"), "sampler_name": sampler,
        "cfg_scale": first.get("guidance"), "steps": first.get("steps"), "batch_size": body.batch_size,
        "restore_faces": False, "face_restoration_model": None, "sd_model_name": _model_name(service),
        "sd_model_hash": None, "sd_vae_name": None, "sd_vae_hash": None, "seed_resize_from_w": -1,
        "seed_resize_from_h": -1, "denoising_strength": first.get("strength"),
        "extra_generation_params": {"Kolors job": job.id}, "index_of_first_image": 0,
        "infotexts": [format_parameters(r) for r in records], "styles": [],
        "job_timestamp": datetime.fromtimestamp(job.created).strftime("%Y%m%d%H%M%S"), "clip_skip": 1,
        "is_using_inpainting_conditioning": False, "version": f"kolors {__version__}",
        "interrupted": job.status == "cancelled",
    }


def _model_name(service: Service) -> str:
    return str(service.options.get("sd_model_checkpoint") or service.settings.model or "kolors-built-in")


def _progress(service: Service, skip_current_image: bool) -> dict[str, Any]:
    counts = service.queue.counts()
    running = service.events.running_here()
    state = {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "",
             "job_count": counts["queued"] + counts["running"], "job_timestamp": "0", "job_no": 0,
             "sampling_step": 0, "sampling_steps": 0}
    answer: dict[str, Any] = {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None,
                              "textinfo": None}
    job = service.queue.get(running[0]) if running else None
    if job is None:
        return answer
    latest = service.events.latest(job.id) or {}
    state.update(job=job.id, job_timestamp=datetime.fromtimestamp(job.created).strftime("%Y%m%d%H%M%S"),
                 sampling_step=latest.get("step", 0), sampling_steps=latest.get("steps") or 0,
                 interrupted=service.events.is_cancelled(job.id))
    answer.update(progress=latest.get("fraction", 0.0), eta_relative=latest.get("eta_s") or 0.0,
                  textinfo=f"job {job.id}: step {latest.get('step', 0)} of {latest.get('steps') or '?'}")
    preview = latest.get("preview")
    if preview and not skip_current_image:
        answer["current_image"] = preview.partition(",")[2]
    return answer


