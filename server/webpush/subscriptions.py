"""A squad's Web Push subscription: its shape, the check of where it points, and its store.

A subscription is what the browser's ``PushSubscription.toJSON()`` gives: the push
service's ``endpoint`` URL and the phone's keys. The hub will POST to that URL, so it must
name one of the allowed push services (``webpush_hosts``): a squad's phone cannot turn the
hub into a client of anything else.

The store keeps one subscription per squad in Redis and a copy in every process, reloaded
when the version key moves: the hook on the offer path reads the copy, never Redis.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable
from typing import Annotated
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta
from redis.asyncio import Redis
from redis.exceptions import RedisError

from server.store import keys
from server.store.availability import is_outage
from server.store.text import text

Base64Url = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_\-]+={0,2}$", max_length=200)]
P256_POINT_BYTES = 65  # an uncompressed P-256 public key
AUTH_SECRET_BYTES = 16


class SubscriptionKeys(msgspec.Struct, forbid_unknown_fields=True):
    p256dh: Base64Url  # the phone's P-256 public key
    auth: Base64Url  # the phone's 16-byte authentication secret


class Subscription(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``PushSubscription.toJSON()`` of the squad's phone."""

    endpoint: Annotated[str, Meta(min_length=8, max_length=2000)]
    keys: SubscriptionKeys
    expirationTime: float | None = None  # noqa: N815 - the browser's name


class BadSubscription(ValueError):
    """A subscription the hub will not push to; ``field`` names the part at fault."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


def b64url_bytes(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def allowed_hosts(setting: str) -> tuple[str, ...]:
    return tuple(h.strip().lower() for h in setting.split(",") if h.strip())


def check(subscription: Subscription, hosts: tuple[str, ...]) -> None:
    """Raise :class:`BadSubscription` unless the hub may push to ``subscription``: an https
    endpoint on an allowed host (plain http only to an allowed loopback host), and keys of
    the right sizes."""
    parts = urlsplit(subscription.endpoint)
    host = (parts.hostname or "").lower()
    if not host or not any(_matches(host, allowed) for allowed in hosts):
        raise BadSubscription("endpoint", f"{host or 'no host'} is not an allowed push service")
    if parts.scheme != "https" and not (parts.scheme == "http" and _loopback(host)):
        raise BadSubscription("endpoint", "a push service is reached over https")
    if parts.username or parts.password:
        raise BadSubscription("endpoint", "no credentials in the endpoint")
    try:
        port = parts.port
    except ValueError:
        raise BadSubscription("endpoint", "not a port number") from None
    if port not in (None, 443) and not _loopback(host):  # push services listen on 443 only
        raise BadSubscription("endpoint", "a push service is reached on its https port")
    for name, size in (("p256dh", P256_POINT_BYTES), ("auth", AUTH_SECRET_BYTES)):
        try:
            raw = b64url_bytes(getattr(subscription.keys, name))
        except (binascii.Error, ValueError):
            raise BadSubscription(f"keys.{name}", "not base64url") from None
        if len(raw) != size:
            raise BadSubscription(f"keys.{name}", f"{len(raw)} bytes; expected {size}")
    if b64url_bytes(subscription.keys.p256dh)[0] != 0x04:
        raise BadSubscription("keys.p256dh", "not an uncompressed P-256 point")


def _matches(host: str, allowed: str) -> bool:
    if allowed.startswith("*."):
        return host.endswith(allowed[1:])
    return host == allowed


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Subscription)


class Subscriptions:
    """Every squad's subscription: Redis is the record, ``copy`` this process's view."""

    def __init__(self, redis: Redis, failed: Callable[[str, Exception], None]) -> None:
        self._redis = redis
        self._failed = failed
        self.copy: dict[str, Subscription] = {}
        self._version: str | None = None

    def of(self, squad: str) -> Subscription | None:
        return self.copy.get(squad)

    async def put(self, squad: str, subscription: Subscription) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.push_subscriptions(), squad, _encoder.encode(subscription))
            pipe.incr(keys.push_version())
            await pipe.execute()
        self.copy[squad] = subscription  # this process pushes to it at once

    async def remove(self, squad: str, endpoint: str | None = None) -> bool:
        """Forget the squad's subscription (only if it still points at ``endpoint`` when one
        is given: the phone may have subscribed anew meanwhile). True if one was removed."""
        if endpoint is not None:
            current = await self._redis.hget(keys.push_subscriptions(), squad)
            if current is None or _decoder.decode(current).endpoint != endpoint:
                self._drop_local(squad, endpoint)
                return False
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.push_subscriptions(), squad)
            pipe.incr(keys.push_version())
            removed, _ = await pipe.execute()
        self._drop_local(squad, endpoint)
        return bool(removed)

    def _drop_local(self, squad: str, endpoint: str | None) -> None:
        current = self.copy.get(squad)
        if current is not None and (endpoint is None or current.endpoint == endpoint):
            del self.copy[squad]

    async def reload(self) -> bool:
        """Take the subscriptions other processes recorded, if any changed since the last
        look (one GET when none did). True if the copy was replaced."""
        try:
            version = text(await self._redis.get(keys.push_version())) or "0"
            if version == self._version:
                return False
            raw = await self._redis.hgetall(keys.push_subscriptions())
        except RedisError as exc:
            if not is_outage(exc):
                raise
            self._failed("push subscriptions", exc)
            return False
        copy: dict[str, Subscription] = {}
        for squad, data in raw.items():
            try:
                copy[text(squad)] = _decoder.decode(data)
            except msgspec.DecodeError:
                continue  # written by a newer hub with another shape: skipped, not fatal
        self.copy, self._version = copy, version
        return True
