"""The OpenAI Images API, as the official ``openai`` client calls it: generations, edits (with an optional mask:
its fully transparent pixels are redrawn; no mask: image-to-image), models. Kolors options (negative_prompt,
seed, steps, guidance, scheduler, loras, ...) are extra body fields. Errors come in OpenAI's shape and status
codes, so the client raises its own exception types."""

from __future__ import annotations

import base64
import logging
import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from .api_errors import ApiError
from .api_inputs import kolors_options, mask_from_alpha, size, upload
from .jobqueue import Job
from .service import Service, service_of

log = logging.getLogger("kolors.server")
MODEL_ID = "kolors"
_GENERATION_FIELDS = {"prompt", "model", "n", "size", "response_format", "output_format", "output_compression",
                      "quality", "style", "background", "moderation", "user", "partial_images", "stream",
                      "input_fidelity"}


class ImageGeneration(BaseModel):
    """OpenAI's generation request; Kolors options ride along as extra fields."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"prompt": "一只红色的圆", "n": 1, "size": "1024x1024", "response_format": "b64_json", "seed": 42}]})
    prompt: str
    model: str | None = None
    n: int | None = Field(1, description="images to make")
    size: str | None = Field(None, description="WIDTHxHEIGHT, or auto (the model's size)")
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(None, ge=0, le=100)
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    moderation: str | None = None
    user: str | None = None


def router(auth: Any) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(auth)])

    @api.get("/models")
    async def models(request: Request) -> dict[str, Any]:
        return {"object": "list", "data": [_model()]}

    @api.get("/models/{model_id}")
    async def model(model_id: str) -> dict[str, Any]:
        if model_id != MODEL_ID:
            raise ApiError(404, f"the model '{model_id[:60]}' does not exist: this server has '{MODEL_ID}'",
                           param="model", code="model_not_found")
        return _model()

    @api.post("/images/generations")
    async def generations(body: ImageGeneration, request: Request) -> dict[str, Any]:
        """Make ``n`` images from a prompt."""
        service = service_of(request)
        native = {"prompt": body.prompt, "num_images": _n(body.n, service.settings.limits.max_images)}
        wh = size(body.size)
        if wh:
            native["width"], native["height"] = wh
        native |= kolors_options(body.model_extra or {}, _GENERATION_FIELDS)
        return await _run(service, request, native, body.response_format, body.output_format,
                          body.output_compression, body.user)

    @api.post("/images/edits", openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image", "prompt"], "properties": {
            "image": {"type": "string", "format": "binary"}, "mask": {"type": "string", "format": "binary"},
            "prompt": {"type": "string"}, "n": {"type": "integer"}, "size": {"type": "string"},
            "response_format": {"type": "string", "enum": ["url", "b64_json"]},
            "output_format": {"type": "string", "enum": ["png", "jpeg", "webp"]}, "model": {"type": "string"},
            "user": {"type": "string"}}}}}}})
    async def edits(request: Request) -> dict[str, Any]:
        """Redraw an image: where the mask is fully transparent (inpainting), or all of it (image-to-image)."""
        service = service_of(request)
        form = await request.form(max_files=8, max_fields=100)
        fields = {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile)}
        files = {k: v for k, v in form.multi_items() if isinstance(v, UploadFile)}
        image = files.get("image") or files.get("image[]")
        if image is None:
            raise ApiError(400, "image is missing: send the image to edit as a multipart file field 'image'",
                           param="image")
        prompt = fields.get("prompt")
        if not prompt:
            raise ApiError(400, "prompt is missing: say what the edited image should show", param="prompt")
        limit = service.settings.limits.max_upload_bytes + 1
        data = await image.read(limit)
        reference, image_size = await run_in_threadpool(upload, service.uploads, data, "image")
        native: dict[str, Any] = {"prompt": prompt, "num_images": _n(_int(fields.get("n"), "n", 1), service.settings.limits.max_images),
                                  "init_image": reference}
        if "mask" in files:
            mask = await files["mask"].read(limit)
            mask_png = await run_in_threadpool(mask_from_alpha, mask, image_size)
            native["mask"] = (await run_in_threadpool(upload, service.uploads, mask_png, "mask"))[0]
        wh = size(fields.get("size"))
        if wh:
            native["width"], native["height"] = wh
        native |= kolors_options(fields, _GENERATION_FIELDS, parse_text=True)
        response_format = fields.get("response_format")
        if response_format not in (None, "url", "b64_json"):
            raise ApiError(400, f"response_format must be url or b64_json, got {response_format[:30]!r}",
                           param="response_format")
        output_format = fields.get("output_format")
        if output_format not in (None, "png", "jpeg", "webp"):
            raise ApiError(400, f"output_format must be png, jpeg or webp, got {output_format[:30]!r}",
                           param="output_format")
        return await _run(service, request, native, response_format, output_format,
                          _int(fields.get("output_compression"), "output_compression", None), fields.get("user"))

    return api


def _model() -> dict[str, Any]:
    return {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "kolors"}


def _n(n: int | None, limit: int) -> int:
    if n is None:
        return 1
    if not 1 <= n <= limit:
        raise ApiError(400, f"n must be at least 1, got {n}" if n < 1 else
                       f"n must be at most {limit} on this server, got {n}: ask for fewer images", param="n")
    return n


def _int(value: Any, field: str, default: int | None) -> int | None:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"{field} must be a whole number, got {str(value)[:30]!r}", param=field) from None


async def _run(service: Service, request: Request, native: dict[str, Any], response_format: str | None,
               output_format: str | None, compression: int | None, user: str | None) -> dict[str, Any]:
    """Queue the job, wait for it, and answer as OpenAI does."""
    job = await service.submit_async(native, "openai")
    if user:
        log.info("job %s for user %s", job.id, str(user)[:80])
    job = await service.wait(job.id)
    if job.status != "succeeded":
        raise ApiError(400 if job.status == "cancelled" else 500,
                       f"the generation {job.status}: {job.error or 'no reason given'} (job {job.id})",
                       code=f"generation_{job.status}")
    fmt = output_format or "png"
    data = []
    for i in range(len(job.results or [])):
        if (response_format or "b64_json") == "b64_json":
            raw = await run_in_threadpool(service.encoded, job, i, fmt, compression)
            data.append({"b64_json": base64.b64encode(raw).decode(), "revised_prompt": native["prompt"]})
        else:
            data.append({"url": _url(service, request, job, i, fmt), "revised_prompt": native["prompt"]})
    first = (job.results or [{}])[0].get("parameters", {})
    return {"created": int(time.time()), "data": data, "output_format": fmt,
            "size": f"{first.get('width')}x{first.get('height')}", "quality": "auto", "background": "opaque"}


def _url(service: Service, request: Request, job: Job, index: int, fmt: str) -> str:
    url = f"{str(request.base_url).rstrip('/')}/api/v1/jobs/{job.id}/images/{index}?format={fmt}"
    token = service.keys.token(f"{job.id}/{index}")
    return url + (f"&token={token}" if token else "")


