"""For the operator's tools, outside ``/api/v1``:

- ``GET /livez``: the process answers (its event loop runs). No sign-in, no details.
- ``GET /readyz``: it may be sent connections: 200, or 503 while Redis is unreachable or
  the process drains for a restart. No sign-in, no details beyond that.
- ``GET /metrics``: Prometheus text format, for admin (a bearer token). A scraper without
  a person's token uses the port of its own (``DISPATCH_METRICS_PORT``) instead, kept off
  the public network.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api.common import authorize, components, json_response

READY_PING_TIMEOUT_S = 1.0


async def redis_answers(request: Request) -> bool:
    """Whether Redis answers a ping within :data:`READY_PING_TIMEOUT_S`. Bounded: with Redis
    away, the client's retries would hold a health check's answer for seconds."""
    try:
        return bool(await asyncio.wait_for(components(request).redis.ping(), READY_PING_TIMEOUT_S))
    except Exception:  # noqa: BLE001 - not answering, whatever the reason
        return False


async def livez(request: Request) -> Response:
    return json_response({"status": "alive"})


async def readyz(request: Request) -> Response:
    parts = components(request)
    if parts.readiness.draining:
        return json_response({"status": "draining"}, 503)
    if not await redis_answers(request):
        return json_response({"status": "redis_unreachable"}, 503)
    return json_response({"status": "ready"})


async def metrics(request: Request) -> Response:
    authorize(request, "admin")
    body = generate_latest(components(request).metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def operation_routes() -> list[Route]:
    return [Route("/livez", livez), Route("/readyz", readyz), Route("/metrics", metrics)]
