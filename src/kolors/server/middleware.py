"""ASGI middleware: one structured log line per request (with its id, also sent back as ``X-Request-ID``), and a
cap on request bodies (413 before a huge upload is read)."""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("kolors.server.access")


class RequestLog:
    def __init__(self, app: ASGIApp, metrics: Any = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or "req_" + secrets.token_hex(6)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            path = scope.get("path", "")
            log.info(json.dumps({"request": request_id, "method": scope.get("method"), "path": path,
                                 "status": status, "seconds": round(seconds, 4),
                                 "client": (scope.get("client") or ["?"])[0]}))
            if self.metrics is not None:
                self.metrics.request(path, status, seconds)


class BodyLimit:
    """Refuse bodies over ``max_bytes``: by Content-Length at once, else while they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._too_large(scope, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._too_large(scope, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        message = f"the request body is larger than this server's limit of {self.max_bytes} bytes: send less"
        if scope.get("path", "").startswith("/sdapi/"):
            body: dict[str, Any] = {"error": "too_large", "detail": message, "body": "", "errors": message}
        else:
            body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                              "code": "too_large"}}
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": data})


class _TooLarge(Exception):
    pass
