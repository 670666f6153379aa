"""API keys: ``Authorization: Bearer <key>``, ``X-API-Key: <key>``, or HTTP Basic with the key as password (what
AUTOMATIC1111 clients send). Keys are compared in constant time; a missing or wrong key is a 401 in the API's
own error shape. Result URLs handed to OpenAI clients carry a token derived from the keys instead."""

from __future__ import annotations

import base64
import hashlib
import hmac

from fastapi import Request

from .api_errors import ApiError


class ApiKeys:
    def __init__(self, keys: frozenset[str]) -> None:
        self._keys = [k.encode() for k in sorted(keys)]
        self._secret = hashlib.sha256(b"kolors-url\0" + b"\0".join(self._keys)).digest()

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def valid(self, key: str | None) -> bool:
        if key is None:
            return False
        given = key.encode()
        found = False
        for known in self._keys:  # every key compared, in constant time each
            found |= hmac.compare_digest(given, known)
        return found

    def __call__(self, request: Request) -> None:
        """A FastAPI dependency: the request carries a valid key (when the server has keys)."""
        if not self._keys:
            return
        if not self.valid(_presented(request)):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>' (or 'X-API-Key')",
                           headers={"WWW-Authenticate": "Bearer"})

    # --- signed result URLs -----------------------------------------------------------------------------------
    def token(self, path: str) -> str | None:
        if not self._keys:
            return None
        return hmac.new(self._secret, path.encode(), hashlib.sha256).hexdigest()[:32]

    def token_valid(self, path: str, token: str | None) -> bool:
        expected = self.token(path)
        return expected is None or (token is not None and hmac.compare_digest(expected, token))


def _presented(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    if scheme.lower() == "basic" and value:
        try:
            return base64.b64decode(value.strip()).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return None
    return request.headers.get("x-api-key")
