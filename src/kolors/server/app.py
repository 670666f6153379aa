"""The FastAPI application of ``kolors serve``: the parts (:class:`~kolors.server.service.Service`), the three
APIs, health/readiness/metrics, middleware (request log, body limit, CORS when configured) and the web UI."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..version import __version__
from . import a1111_api, api_errors, native_api, openai_api
from .auth import ApiKeys
from .database import connect
from .events import JobEvents
from .jobqueue import JobQueue
from .metrics import Metrics
from .middleware import BodyLimit, RequestLog
from .references import References
from .retention import Retention
from .service import Service
from .settings import ServerSettings
from .storage import Storage
from .uploads import Uploads
from .worker import Worker

log = logging.getLogger("kolors.server")


def worker_devices(settings: ServerSettings) -> list[str]:
    """One worker per GPU with ``workers="auto"`` (one on a CPU machine), else ``workers`` on the device."""
    if settings.device not in ("auto", "cuda") or settings.workers != "auto":
        count = 1 if settings.workers == "auto" else int(settings.workers)
        return [settings.device] * count
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        return [f"cuda:{i}" for i in range(gpus)]
    return [settings.device]


def build_service(settings: ServerSettings) -> Service:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = connect(settings.database_url)
    queue = JobQueue(engine, settings.max_queue)
    storage = Storage(settings.data_dir, settings.limits)
    uploads = Uploads(engine, storage)
    return Service(settings=settings, queue=queue, events=JobEvents(), storage=storage, uploads=uploads,
                   references=References(settings, storage, uploads), keys=ApiKeys(settings.api_keys),
                   metrics=Metrics(queue),
                   options={"sd_model_checkpoint": settings.model or "kolors-built-in", "samples_format": "png"})


def create_app(settings: ServerSettings, *, start_workers: bool = True) -> FastAPI:
    service = build_service(settings)
    retention = Retention(settings, service.queue, service.storage, service.uploads)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        taken = service.queue.recover(startup=True)
        if taken:
            log.info("took back %d jobs that a stopped server was running", taken)
        if start_workers:
            for index, device in enumerate(worker_devices(settings)):
                worker = Worker(index, device, settings, service.queue, service.events, service.storage,
                                service.references, service.metrics)
                service.workers.append(worker)
                worker.start()
        retention.start()
        yield
        retention.stop()
        for worker in service.workers:
            worker.stop()

    app = FastAPI(title="kolors serve", version=__version__, lifespan=lifespan,
                  description="Kolors text-to-image: the native job API, the OpenAI Images API and the "
                              "AUTOMATIC1111 /sdapi/v1 API on one queue. See docs/server.md.")
    app.state.service = service
    api_errors.install(app)
    auth = service.keys
    for api in (native_api, openai_api, a1111_api):
        app.include_router(api.router(auth))

    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, str]:
        """The server is up (it answers)."""
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"])
    async def ready() -> Any:
        """200 when a model is loaded and jobs run; 503 while it loads (or if it failed to load)."""
        if service.ready:
            return {"status": "ready", "workers": sum(w.ready for w in service.workers)}
        errors = [w.error for w in service.workers if w.error]
        return JSONResponse({"status": "failed" if errors else "loading", "errors": errors}, status_code=503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST
        from starlette.concurrency import run_in_threadpool

        return Response(await run_in_threadpool(service.metrics.render), media_type=CONTENT_TYPE_LATEST)

    _mount_web_ui(app)
    app.add_middleware(BodyLimit, max_bytes=4 * settings.limits.max_upload_bytes + 2**20)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])
    app.add_middleware(RequestLog, metrics=service.metrics)
    return app


def _mount_web_ui(app: FastAPI) -> None:
    """The web UI at / when its package is installed; otherwise / says where the APIs are."""
    try:
        from .webui import mount
    except ImportError:
        @app.get("/", include_in_schema=False)
        async def root() -> dict[str, str]:
            return {"name": "kolors serve", "docs": "/docs", "native": "/api/v1", "openai": "/v1",
                    "a1111": "/sdapi/v1"}
        return
    mount(app)
