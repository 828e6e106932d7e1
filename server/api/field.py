"""The squad phone app's HTTP side: who the squad is (its sign-in check) and its Web Push
subscription.

A squad has no person account: it authenticates with its id and token, the same pair its
field socket's ``hello`` carries, as ``Authorization: Basic base64(<squad>:<token>)`` (never
in a URL). Wrong pairs spend the address's failed-hello budget, shared with the socket, so
guessing tokens over HTTP is no faster than over the socket.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from dataclasses import dataclass

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.accounts.asgi import client_address
from server.api.common import ApiError, components, json_response, read_body
from server.api.openapi import SQUAD, described
from server.webpush.subscriptions import BadSubscription, Subscription

SQUAD_AUTH_SCHEME = "basic"


@dataclass(frozen=True, slots=True)
class SquadCaller:
    squad: str
    unit: str


class Named(msgspec.Struct):
    code: str
    name_zh: str
    name_en: str


class FieldProfile(msgspec.Struct):
    """What the phone app shows about its squad, and the key it subscribes to pushes with."""

    squad: str
    name: str
    unit: Named
    categories: list[Named]  # every category (an assist item may be another unit's)
    push_key: str  # the hub's VAPID public key (applicationServerKey), base64url


def _credentials(request: Request) -> tuple[str, str]:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != SQUAD_AUTH_SCHEME or not encoded.strip():
        raise ApiError(401, "unauthenticated", "the squad's id and token are required (Basic)")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(401, "unauthenticated", "malformed Basic credentials") from None
    squad, sep, token = decoded.partition(":")
    if not sep or not squad or not token:
        raise ApiError(401, "unauthenticated", "Basic credentials must be <squad>:<token>")
    return squad, token


async def authorize_squad(request: Request) -> SquadCaller:
    """The squad whose id and token the request carries; 401 otherwise, 429 once the
    address has used up its failed-hello budget."""
    services = components(request)
    squad, token = _credentials(request)
    failures = services.failed_hellos
    address = client_address(request.scope)
    now = time.monotonic()
    if not failures.allows(address, now):
        retry = math.ceil(1 / max(failures.rate, 1e-6))
        raise ApiError(
            429,
            "too_many_failures",
            "too many wrong squad credentials from this address: wait",
            headers={"Retry-After": str(retry)},
        )
    unit = await services.squads.authenticate(squad, token)
    if unit is None:
        failures.spend(address, now)
        raise ApiError(401, "unauthenticated", "unknown squad or token")
    return SquadCaller(squad, unit)


@described(
    summary="The signed-in squad (Basic squad:token): its name, unit, the category names "
    "and the Web Push key",
    roles=SQUAD,
    answer=FieldProfile,
    errors=(429,),
)
async def field_profile(request: Request) -> Response:
    caller = await authorize_squad(request)
    services = components(request)
    city = services.city
    described_squad = await services.squads.describe(caller.unit, caller.squad) or {}
    unit = city.unit(caller.unit)
    profile = FieldProfile(
        squad=caller.squad,
        name=str(described_squad.get("name", "")),
        unit=Named(
            caller.unit,
            unit.name_zh if unit else caller.unit,
            unit.name_en if unit else caller.unit,
        ),
        categories=[Named(c.code, c.name_zh, c.name_en) for c in city.categories],
        push_key=services.webpush.signer.public_key,
    )
    return json_response(profile)


@described(
    summary="Record the squad phone's Web Push subscription (replaces an earlier one): "
    "offers and notices then also wake the phone",
    roles=SQUAD,
    body=Subscription,
    status=204,
    errors=(429,),
)
async def put_push_subscription(request: Request) -> Response:
    caller = await authorize_squad(request)
    subscription = await read_body(request, Subscription)
    webpush = components(request).webpush
    try:
        webpush.check(subscription)
    except BadSubscription as exc:
        raise ApiError(422, "invalid", str(exc), {exc.field: str(exc)}) from None
    await webpush.subscriptions.put(caller.squad, subscription)
    return Response(status_code=204)


@described(
    summary="Forget the squad phone's Web Push subscription",
    roles=SQUAD,
    status=204,
    errors=(429,),
)
async def delete_push_subscription(request: Request) -> Response:
    caller = await authorize_squad(request)
    await components(request).webpush.subscriptions.remove(caller.squad)
    return Response(status_code=204)


def field_routes() -> list[Route]:
    prefix = "/api/v1/field"
    return [
        Route(f"{prefix}/me", field_profile, methods=["GET"]),
        Route(f"{prefix}/push-subscription", put_push_subscription, methods=["PUT"]),
        Route(f"{prefix}/push-subscription", delete_push_subscription, methods=["DELETE"]),
    ]
