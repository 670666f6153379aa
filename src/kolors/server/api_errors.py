"""Errors as each API shapes them, and the exception handlers that make every failure one.

The native and OpenAI routes answer ``{"error": {"message", "type", "param", "code"}}`` (OpenAI's shape, so its
client raises its own exception types); the AUTOMATIC1111 routes answer A1111's ``{"error", "detail", "body",
"errors"}``, and every bad value there is a 422, as A1111's own FastAPI validation answers (the other routes: 400).
Bad input is a 4xx with one line naming the problem and the fix, never a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import KolorsError

log = logging.getLogger("kolors.server")
TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
         405: "invalid_request_error", 409: "conflict_error", 410: "not_found_error", 413: "invalid_request_error",
         422: "invalid_request_error", 429: "rate_limit_error", 503: "server_error", 504: "timeout_error"}
CODES = {401: "invalid_api_key", 404: "not_found", 410: "expired", 413: "too_large", 429: "rate_limit_exceeded",
         503: "not_ready", 504: "timeout"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.code = code or CODES.get(status, "invalid_value" if status == 400 else "error")
        self.headers = headers


def error_response(request: Request, status: int, message: str, *, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    message = " ".join(str(message).split())
    if request.url.path.startswith("/sdapi/"):
        status = 422 if status == 400 else status
        body: dict[str, Any] = {"error": code or CODES.get(status, "error"), "detail": message, "body": "",
                                "errors": message}
    else:
        body = {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"), "param": param,
                          "code": code or CODES.get(status, "invalid_value" if status < 500 else "server_error")}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "the request is not valid", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "form")]
    field = ".".join(loc) or None
    message = first.get("msg", "invalid value")
    if first.get("type") == "json_invalid":
        return "the body is not valid JSON: send a JSON object", None
    if first.get("type") == "missing":
        return f"{field} is missing: it is required", field
    return (f"{field}: {message}" if field else message), field


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.message, param=exc.param, code=exc.code, headers=exc.headers)

    @app.exception_handler(KolorsError)
    async def _kolors_error(request: Request, exc: KolorsError) -> JSONResponse:
        return error_response(request, 400, str(exc), param=getattr(exc, "param", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = _validation_message(exc)
        return error_response(request, 400, message, param=field)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path} (see /docs)"
        return error_response(request, exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return error_response(request, 500, f"internal error: {type(exc).__name__} (see the server log)",
                              code="server_error")
