"""The web UI of ``kolors serve``: one page at ``/`` built on the native job API (docs: README, "Web UI").

Everything the page needs ships in ``static/`` (plain JavaScript modules, no build step, no CDN): the server only
has to call :func:`mount`. The page is served with a Content-Security-Policy that allows requests to its own
origin only, so a browser showing it never contacts another host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STATIC = Path(__file__).resolve().parent / "static"
ASSETS_PATH = "/ui"  # where the scripts, styles and message catalogues are served

# Only this origin: scripts, styles, API calls; images may also be data: (progress previews) and blob: (results
# fetched with the API key). No inline scripts, no frames, no plugins.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def mount(app: Any) -> None:
    """Serve the page at ``/`` and its files under ``/ui/`` on ``app`` (a FastAPI/Starlette application)."""
    from starlette.responses import FileResponse
    from starlette.staticfiles import StaticFiles

    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC), name="webui")
