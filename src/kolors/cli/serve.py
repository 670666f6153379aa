"""``kolors serve``: the HTTP server (docs/server.md)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ..errors import KolorsError


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``serve`` to the ``kolors`` subcommands."""
    from ..arguments import positive_int
    from ..defaults import MODES
    from ..server.settings import DEFAULT_PORT, Limits

    limits = Limits()
    serve = sub.add_parser("serve", parents=[common],
                           help="HTTP server: native job API, OpenAI Images API, AUTOMATIC1111 API",
                           description="Serve one warm model over HTTP: the native job API (/api/v1), the OpenAI "
                                       "Images API (/v1) and AUTOMATIC1111's /sdapi/v1, on a database queue "
                                       "(SQLite in --data-dir, or PostgreSQL). See docs/server.md.")
    g = serve.add_argument_group("network")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                                                       "0.0.0.0 for every interface)")
    g.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    g.add_argument("--api-keys", type=Path, metavar="FILE",
                   help="file of API keys, one per line (also $KOLORS_API_KEYS, comma-separated); "
                        "without keys anyone who reaches the port may use it")
    g.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN (repeatable; default: none)")
    m = serve.add_argument_group("model")
    m.add_argument("--model", metavar="DIR_OR_HUB_ID", help="model folder (default: $KOLORS_MODEL, else built-in)")
    m.add_argument("--mode", choices=MODES, default="exact", help="run mode (docs/performance.md)")
    m.add_argument("--device", default="auto", help="auto (every GPU), cpu, cuda, cuda:N, mps")
    m.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16")
    m.add_argument("--workers", default="auto", help="models loaded: auto = one per GPU, one on a CPU machine")
    m.add_argument("--lora-dir", type=Path, metavar="DIR", help="LoRA .safetensors files requests may name")
    m.add_argument("--controlnet-dir", type=Path, metavar="DIR", help="ControlNet folders requests may name")
    m.add_argument("--ip-adapter-dir", type=Path, metavar="DIR", help="IP-Adapter folders requests may name")
    m.add_argument("--face-id-dir", type=Path, metavar="DIR", help="FaceID adapter folders requests may name")
    q = serve.add_argument_group("queue and storage")
    q.add_argument("--data-dir", type=Path, default=Path("kolors-data"), metavar="DIR",
                   help="jobs database (SQLite), uploads and result images (default ./kolors-data)")
    q.add_argument("--database", metavar="URL",
                   help="postgresql://user:pass@host/db to share one queue between servers (default: SQLite)")
    q.add_argument("--max-queue", type=positive_int, default=100, metavar="N",
                   help="waiting jobs before new ones get 429 (default 100)")
    q.add_argument("--batch-images", type=positive_int, default=8, metavar="N",
                   help="queued jobs with the same settings are denoised together, up to N images (1: off)")
    q.add_argument("--lease", type=float, default=30.0, metavar="S",
                   help="seconds after which another server takes over the jobs of one that died (default 30)")
    q.add_argument("--request-timeout", type=float, default=600.0, metavar="S",
                   help="how long the OpenAI and A1111 routes wait for their images (default 600)")
    q.add_argument("--retention-days", type=float, default=7.0, metavar="D", help="keep results D days (default 7)")
    q.add_argument("--retention-gb", type=float, default=10.0, metavar="GB",
                   help="keep at most GB of result images, oldest removed first (default 10)")
    lim = serve.add_argument_group("limits per request")
    lim.add_argument("--max-pixels", type=positive_int, default=limits.max_pixels, metavar="N")
    lim.add_argument("--max-steps", type=positive_int, default=limits.max_steps, metavar="N")
    lim.add_argument("--max-images", type=positive_int, default=limits.max_images, metavar="N")
    lim.add_argument("--max-prompt-chars", type=positive_int, default=limits.max_prompt_chars, metavar="N")
    lim.add_argument("--max-upload-mb", type=float, default=limits.max_upload_bytes / 2**20, metavar="MB")
    serve.add_argument("--no-previews", action="store_true", help="no preview images in progress events")


def settings_from(args: argparse.Namespace) -> Any:
    from ..server.settings import Limits, ServerSettings, read_api_keys

    workers: int | str = args.workers
    if workers != "auto":
        if not str(workers).isdigit() or int(workers) < 1:
            raise KolorsError(f"--workers must be auto or a positive number, got {workers}")
        workers = int(workers)
    if args.database and not args.database.startswith(("postgresql://", "postgresql+psycopg://", "sqlite:///")):
        raise KolorsError(f"--database must be a postgresql:// (or sqlite:///) URL, got {args.database.split(':')[0]}:…")
    for option in ("lora_dir", "controlnet_dir", "ip_adapter_dir", "face_id_dir"):
        folder = getattr(args, option)
        if folder is not None and not folder.is_dir():
            raise KolorsError(f"--{option.replace('_', '-')} {folder} is not a folder")
    if not 0 < args.port < 65536:
        raise KolorsError(f"--port must be between 1 and 65535, got {args.port}")
    limits = Limits(max_pixels=args.max_pixels, max_steps=args.max_steps, max_images=args.max_images,
                    max_prompt_chars=args.max_prompt_chars, max_upload_bytes=int(args.max_upload_mb * 2**20))
    return ServerSettings(
        host=args.host, port=args.port, model=args.model, mode=args.mode, device=args.device, dtype=args.dtype,
        workers=workers, data_dir=args.data_dir.expanduser().absolute(), database=args.database,
        lora_dir=args.lora_dir, controlnet_dir=args.controlnet_dir, ip_adapter_dir=args.ip_adapter_dir,
        face_id_dir=args.face_id_dir, api_keys=read_api_keys(args.api_keys), cors_origins=tuple(args.cors_origin),
        max_queue=args.max_queue, batch_images=args.batch_images, lease_s=args.lease,
        request_timeout_s=args.request_timeout, retention_age_s=args.retention_days * 86400,
        retention_bytes=int(args.retention_gb * 2**30), previews=not args.no_previews, limits=limits)


def _check_port(host: str, port: int) -> None:
    """One clear line when the address is taken or cannot be bound (before the model is loaded)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise KolorsError(f"--host {host} is not an address of this machine") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise KolorsError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another server running "
                              "there? choose another --port)") from None


def run(args: argparse.Namespace) -> int:
    from ..signals import import_whole

    import_whole("uvicorn", "kolors.server.app")  # not cut in half by a Ctrl-C
    import uvicorn

    from ..server.app import create_app

    settings = settings_from(args)
    _check_port(settings.host, settings.port)
    logging.getLogger("kolors.server").setLevel(logging.INFO)
    logging.getLogger("kolors.server.access").setLevel(logging.WARNING if args.quiet else logging.INFO)
    app = create_app(settings)
    where = "SQLite in " + str(settings.data_dir) if settings.database is None else "PostgreSQL"
    keys = f", {len(settings.api_keys)} API key(s)" if settings.api_keys else ", no API keys"
    print(f"kolors: serving on {settings.url} (docs {settings.url}/docs; queue: {where}{keys})", file=sys.stderr,
          flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=5)
    return 0
