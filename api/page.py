"""The operator's live page at ``/``: one HTML file and the script and style it loads, all
shipped in ``api/static`` and read once, so the page opens with no network but this API.

The page draws what the reads under /api/v1 answer and follows ``/api/v1/stream``; nothing
here reads corelane's state. The Content-Security-Policy lets the page load and call only
this origin, so whatever the data holds cannot make it fetch from elsewhere.
"""
from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import Response

from api.paths import PAGE_ASSETS_PATH, PAGE_PATH

PAGE_FILE = "index.html"
# The assets the page may load, by name: nothing else under the static path is served.
ASSET_TYPES = {
    "live.js": "text/javascript; charset=utf-8",
    "live.css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                           "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")


def read_static(name: str) -> bytes:
    """One file of ``api/static``, as the installed package ships it."""
    return files("api").joinpath("static", name).read_bytes()


def page_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    page = read_static(PAGE_FILE)
    assets = {name: read_static(name) for name in ASSET_TYPES}
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY,
               "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

    @router.get(PAGE_PATH)
    async def live_page() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=headers)

    @router.get(PAGE_ASSETS_PATH + "/{name}")
    async def asset(name: str = Path(max_length=64)) -> Response:
        if name not in assets:
            raise HTTPException(404, f"no page asset {name!r}: the page has "
                                     f"{', '.join(sorted(assets))}")
        return Response(assets[name], media_type=ASSET_TYPES[name], headers=headers)

    return router
