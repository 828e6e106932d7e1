"""The browser pages (served by the hub itself: no CDN): where their files live, and the one
thing the hub tells them before their scripts run, the city's time zone."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api.common import components

CITY_SCRIPT = "/city.js"


def static_dir() -> Path:
    return Path(__file__).parent / "static"


async def city_script(request: Request) -> Response:
    """``window.City = {"timezone": ...}``, the city file's ``[city] timezone``. Every page
    loads it before ``common/page.js``, which shows every clock time in that zone: a wall's
    or a desk's computer may well be set to another zone (or to UTC). Public, like the pages'
    other scripts; never cached without asking, so a changed city file is seen."""
    city = {"timezone": components(request).city.timezone}
    return Response(
        f"window.City = {json.dumps(city)};\n",
        media_type="text/javascript",
        headers={"cache-control": "no-cache"},
    )


def page_routes() -> list[Route]:
    return [Route(CITY_SCRIPT, city_script, methods=["GET"])]
