"""The native job API (docs/server.md): submit a GenerationRequest, follow it (status, Server-Sent Events), fetch
its PNGs, cancel it; uploads, the model's facts, the tokenizer, control maps and PNG parameters for the web UI."""

from __future__ import annotations

import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from .. import defaults as kolors_defaults
from ..errors import KolorsError
from ..loading.locate import conventional_controlnet_folder
from ..request import CONTROL_TYPES, TASKS, GenerationRequest
from ..schedulers import SCHEDULER_NAMES
from ..version import __version__
from .api_errors import ApiError
from .jobqueue import QUEUED, RUNNING, STATUSES, Job
from .job_view import job_json, progress_of
from .references import References
from .service import Service, service_of

KEEPALIVE_S = 15.0
SIZE_PRESETS = ((1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216), (1344, 768), (768, 1344),
                (1536, 640), (640, 1536))  # SDXL's training buckets, which Kolors shares


class LoraName(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="a .safetensors file name in the server's --lora-dir")
    weight: float = 1.0


class JobRequest(BaseModel):
    """A GenerationRequest (kolors.request) in JSON; image fields are "upload:<id>" or "job:<id>/<index>"."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"prompt": "一只红色的圆", "seed": 42, "steps": 20, "num_images": 1}]})
    prompt: str
    negative_prompt: str | None = None
    task: Literal["text-to-image", "image-to-image", "inpaint", "outpaint"] | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    guidance_stop: float | None = None
    scheduler: str | None = None
    seed: int | None = None
    num_images: int = 1
    init_image: str | None = None
    strength: float | None = None
    mask: str | None = None
    feather: int | None = None
    extend: list[int] | None = None
    controls: list[dict[str, Any]] | None = None
    loras: list[LoraName] | None = None
    ip_adapter: dict[str, Any] | None = None
    face_id: dict[str, Any] | None = None
    pag_scale: float | None = None
    mode: str | None = None


class Submitted(BaseModel):
    id: str
    status: str
    position: int | None


class TokenizeRequest(BaseModel):
    text: str


class ControlMapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["canny", "depth", "pose"]
    image: str
    thresholds: list[int] | None = None
    detect: bool | None = None


def router(auth: Any) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["native"])
    guarded = [Depends(auth)]

    @api.get("/info", dependencies=guarded)
    async def info(request: Request) -> dict[str, Any]:
        """The model, its defaults, what requests may name (adapters, schedulers), and the server's limits."""
        return await run_in_threadpool(_info, service_of(request))

    @api.post("/tokenize", dependencies=guarded)
    async def tokenize(body: TokenizeRequest, request: Request) -> dict[str, int]:
        """How many of the model's tokens a prompt is (the model reads 256)."""
        pipe = service_of(request).pipeline()
        tokens = await run_in_threadpool(lambda: len(pipe.components.tokenizer(body.text[:20000])["input_ids"]))
        return {"tokens": tokens, "limit": 256, "dropped": max(0, tokens - 256)}

    @api.post("/uploads", status_code=201, dependencies=guarded)
    async def upload(request: Request, file: UploadFile = File(...)) -> dict[str, Any]:
        """Keep an image (PNG, JPEG, WebP) for requests to name as "upload:<id>"."""
        service = service_of(request)
        data = await file.read(service.settings.limits.max_upload_bytes + 1)
        stored = await run_in_threadpool(service.uploads.add, data, file.filename or "image", "upload")
        return {"id": stored.id, "width": stored.width, "height": stored.height, "name": stored.name}

    @api.get("/uploads/{upload_id}", dependencies=guarded, response_class=Response)
    async def get_upload(upload_id: str, request: Request) -> Response:
        service = service_of(request)
        stored = await run_in_threadpool(service.uploads.get, upload_id)
        path = service.storage.upload_path(stored.file) if stored else None
        if path is None or not path.is_file():
            raise ApiError(404, f"no upload {upload_id[:60]!r}", param="id")
        return Response(path.read_bytes(), media_type=_media_type(path))

    @api.post("/control-maps", dependencies=guarded, response_class=Response)
    async def control_maps(body: ControlMapRequest, request: Request) -> Response:
        """The map a ControlNet of ``type`` would see for an uploaded image (PNG)."""
        return Response(await run_in_threadpool(_control_map, service_of(request), body), media_type="image/png")

    @api.post("/parameters", dependencies=guarded)
    async def parameters(request: Request, file: UploadFile = File(...)) -> dict[str, Any]:
        """The request stored in a PNG made by kolors (its JSON chunk) or AUTOMATIC1111 (its parameters text)."""
        service = service_of(request)
        data = await file.read(service.settings.limits.max_upload_bytes + 1)
        return await run_in_threadpool(_parameters, service, data)

    @api.post("/jobs", status_code=202, response_model=Submitted, dependencies=guarded)
    async def submit(body: JobRequest, request: Request) -> dict[str, Any]:
        """Queue a generation: 202 with the job id and its queue position (0: next); 429 when the queue is full."""
        service = service_of(request)
        job = await service.submit_async(body.model_dump(exclude_unset=True), "native")
        position = await run_in_threadpool(service.queue.position, job)
        return {"id": job.id, "status": job.status, "position": position}

    @api.get("/jobs", dependencies=guarded)
    async def list_jobs(request: Request, status: str | None = None, limit: int = Query(50, ge=1, le=500),
                        before: str | None = None) -> dict[str, Any]:
        """Jobs, newest first; ``status`` is a comma-separated filter, ``before`` a job id to page from."""
        statuses = [s.strip() for s in status.split(",") if s.strip()] if status else None
        for s in statuses or ():
            if s not in STATUSES:
                raise ApiError(400, f"unknown status '{s[:40]}': use {', '.join(STATUSES)}", param="status")
        service = service_of(request)

        def listed() -> list[dict[str, Any]]:
            jobs = service.queue.list(statuses, limit, before)
            return [job_json(j, service.queue, service.events, service.uploads) for j in jobs]

        return {"jobs": await run_in_threadpool(listed)}

    @api.get("/jobs/{job_id}", dependencies=guarded)
    async def get_job(job_id: str, request: Request) -> dict[str, Any]:
        service = service_of(request)
        job = await service.job(job_id)
        return await run_in_threadpool(job_json, job, service.queue, service.events, service.uploads)

    @api.post("/jobs/{job_id}/cancel", dependencies=guarded)
    async def cancel(job_id: str, request: Request) -> dict[str, Any]:
        """Cancel: a queued job at once, a running one at its next step."""
        service = service_of(request)
        job = await service.cancel(job_id)
        return await run_in_threadpool(job_json, job, service.queue, service.events, service.uploads)

    @api.get("/jobs/{job_id}/events", dependencies=guarded, response_class=StreamingResponse)
    async def events(job_id: str, request: Request) -> StreamingResponse:
        """Server-Sent Events: queued {position}, started, progress {step, steps, fraction, eta_s, preview?}, then
        one of succeeded / failed / cancelled with the job; the stream then ends."""
        service = service_of(request)
        await service.job(job_id)
        return StreamingResponse(_stream(service, job_id), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @api.get("/jobs/{job_id}/images/{index}", response_class=Response)
    async def image(job_id: str, index: int, request: Request, format: str = "png", token: str | None = None,
                    ) -> Response:
        """Image ``index`` as PNG with kolors' metadata (``format=jpeg|webp`` converts; ``token`` stands in for the
        API key in URLs the OpenAI route hands out)."""
        service = service_of(request)
        if not service.keys.token_valid(f"{job_id}/{index}", token):
            auth(request)
        job = await service.job(job_id)
        data = await run_in_threadpool(service.encoded, job, index, format.lower())
        return Response(data, media_type=_media_type(Path(f"x.{format.lower()}")),
                        headers={"Content-Disposition": f'inline; filename="{job_id}-{index}.{format.lower()}"'})

    return api


# --- the pieces ------------------------------------------------------------------------------------------------
def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _stream(service: Service, job_id: str):
    """The events of one job, polling the database and woken by this process's workers."""
    position, started, step, last_sent = None, False, -1, time.monotonic()
    while True:
        job: Job = await service.job(job_id)
        if job.status == QUEUED:
            started, step = False, -1  # put back in the queue (a batch partner was cancelled, a worker died)
            now_position = await run_in_threadpool(service.queue.position, job)
            if now_position != position:
                position = now_position
                yield _sse("queued", {"position": position})
                last_sent = time.monotonic()
        elif job.status == RUNNING:
            if not started:
                started = True
                yield _sse("started", {"id": job.id, "started": job.started})
                last_sent = time.monotonic()
            local = service.events.latest(job_id)
            progress = dict(local) if local else progress_of(job, service.events)
            if progress and progress.get("step") is not None and progress["step"] > step:
                step = progress["step"]
                yield _sse("progress", progress)
                last_sent = time.monotonic()
        else:
            if not started and job.started is not None and position is not None:
                yield _sse("started", {"id": job.id, "started": job.started})
            yield _sse(job.status, await run_in_threadpool(job_json, job, service.queue, service.events, service.uploads))
            return
        if time.monotonic() - last_sent > KEEPALIVE_S:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await service.events.wait(job_id, 0.25 if service.events.latest(job_id) is not None else 0.5, steps=True)


def _info(service: Service) -> dict[str, Any]:
    settings = service.settings
    pipe = next((w.pipe for w in service.workers if w.ready), None)
    if pipe is not None:
        d = pipe.defaults
        defaults = {"width": d.width, "height": d.height, "steps": d.steps, "guidance": d.guidance,
                    "guidance_stop": d.guidance_stop, "img2img_strength": d.img2img_strength}
        model, builtin = pipe.model_name, pipe.is_builtin
    else:
        defaults = {"width": 1024, "height": 1024, "steps": kolors_defaults.STEPS, "guidance": kolors_defaults.GUIDANCE,
                    "guidance_stop": 1.0, "img2img_strength": kolors_defaults.IMG2IMG_STRENGTH}
        model, builtin = settings.model or "built-in", settings.model is None
    scale = defaults["width"] / 1024
    presets = sorted({(max(8, round(w * scale / 8) * 8), max(8, round(h * scale / 8) * 8)) for w, h in SIZE_PRESETS},
                     key=lambda s: (-(s[0] == s[1]), s[0]))
    controlnets = References.names(settings.controlnet_dir, files=False)
    # What a control without a named ControlNet uses (the built-in model's canny, or one beside the model folder).
    defaults_found = {kind: conventional_controlnet_folder(kind, pipe.components.folder) for kind in CONTROL_TYPES
                      } if pipe is not None else {}
    default_controlnets = {kind: folder.name for kind, folder in defaults_found.items() if folder is not None}
    by_type = {kind: [n for n in controlnets if kind in n.lower() or not any(k in n.lower() for k in CONTROL_TYPES)]
               for kind in CONTROL_TYPES}
    return {"model": model, "builtin": builtin, "ready": pipe is not None, "mode": settings.mode, "modes": list(kolors_defaults.MODES),
            "defaults": defaults, "size_presets": [list(p) for p in presets], "schedulers": list(SCHEDULER_NAMES),
            "tasks": list(TASKS), "control_types": list(CONTROL_TYPES),
            "loras": References.names(settings.lora_dir, files=True), "controlnets": by_type,
            "default_controlnets": default_controlnets,
            "ip_adapters": References.names(settings.ip_adapter_dir, files=False),
            "face_id_models": References.names(settings.face_id_dir, files=False),
            "limits": settings.limits.as_json(), "token_limit": 256, "auth": service.keys.enabled,
            "version": __version__}


def _control_map(service: Service, body: ControlMapRequest) -> bytes:
    from ..annotators.maps import control_map
    from ..images import open_image

    path = service.references.image(body.image, "image")
    thresholds = tuple(body.thresholds) if body.thresholds else kolors_defaults.CANNY_THRESHOLDS
    if len(thresholds) != 2 or not 0 <= thresholds[0] <= thresholds[1] <= 255:
        raise ApiError(400, f"thresholds must be two numbers 0 <= low <= high <= 255, got {list(thresholds)}",
                       param="thresholds")
    image = control_map(body.type, open_image(path), detect=body.detect, thresholds=thresholds)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _parameters(service: Service, data: bytes) -> dict[str, Any]:
    from ..metadata import JSON_CHUNK, read_parameters, read_png_text

    service.storage.check_image(data, "PNG")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "image.png"
        path.write_bytes(data)
        chunks = read_png_text(path)
        params = read_parameters(path)
    try:
        request = GenerationRequest.from_dict(params, strict=False).to_dict()
    except (KolorsError, TypeError) as exc:
        raise ApiError(400, f"the PNG's parameters cannot be read as a request: {exc}") from None
    for key in ("init_image", "mask"):  # paths on the machine that made it: the client uploads its own
        request.pop(key, None)
    for control in request.get("controls") or []:
        control["image"] = None
        control.pop("controlnet", None)
    if request.get("loras"):
        request["loras"] = [{"name": Path(str(x.get("path"))).name, "weight": x.get("weight", 1.0)}
                            for x in request["loras"]]
    for key in ("ip_adapter", "face_id"):
        request.pop(key, None)
    return {"request": request, "source": "kolors" if JSON_CHUNK in chunks else "a1111"}


def _media_type(path: Path) -> str:
    return {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
            ".gif": "image/gif", ".bmp": "image/bmp", ".tif": "image/tiff"}.get(path.suffix.lower(),
                                                                               "application/octet-stream")

