"""The hub's Web Push: one non-blocking hook for every numbered frame the hub pushes, and
background senders that encrypt and POST each push to the squad's push service.

Every offer to a subscribed squad is pushed, connected or not: the hub cannot tell a phone
in a pocket (the browser suspended its page, the socket not yet timed out) from one in a
hand, and the service worker shows nothing while the app is on screen. The hook costs a
dictionary look-up when the squad has no subscription and never waits: a full queue drops
the push (the socket still carries the offer).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
from redis.asyncio import Redis

from server.outbound import tls_context
from server.settings import Settings
from server.webpush import vapid
from server.webpush.message import Push, encrypt, payload
from server.webpush.subscriptions import Subscription, Subscriptions, allowed_hosts, check

log = logging.getLogger(__name__)

GONE = (404, 410)  # the subscription expired or was withdrawn: forget it


class WebPush:
    def __init__(
        self, redis: Redis, settings: Settings, failed: Callable[[str, Exception], None]
    ) -> None:
        self._settings = settings
        self.subscriptions = Subscriptions(redis, failed)
        key = vapid.hub_key(
            settings.webpush_private_key, settings.webpush_key_file, settings.data_dir
        )
        self.signer = vapid.VapidSigner(key, settings.webpush_subject)
        self.hosts = allowed_hosts(settings.webpush_hosts)
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(settings.webpush_queue)
        self.sent = 0  # accepted by the push service
        self.failed = 0  # refused, unreachable or too slow
        self.dropped = 0  # not sent: the queue was full
        self._warned_at = -math.inf

    def counts(self) -> tuple[int, int, int, int]:
        """(sent, failed, dropped, subscriptions known here), for the metrics."""
        return self.sent, self.failed, self.dropped, len(self.subscriptions.copy)

    def check(self, subscription: Subscription) -> None:
        """Raise BadSubscription unless this hub may push to ``subscription``."""
        check(subscription, self.hosts)

    # ---- the hook ----------------------------------------------------------------------------

    def on_numbered(self, squad: str, body: bytes) -> None:
        """Called for every numbered frame pushed to ``squad`` (``body`` as in its outbox).
        Never blocks; decoding and sending happen in the senders."""
        if squad not in self.subscriptions.copy:
            return
        try:
            self._queue.put_nowait((squad, body))
        except asyncio.QueueFull:
            self.dropped += 1

    # ---- the background --------------------------------------------------------------------

    async def run(self) -> None:
        """The senders and the reload of other processes' subscriptions, until cancelled."""
        limits = httpx.Limits(max_connections=self._settings.webpush_senders * 2)
        http = httpx.AsyncClient(
            timeout=self._settings.webpush_timeout_s,
            limits=limits,
            follow_redirects=False,
            verify=tls_context(),
        )
        try:
            senders = [self._sender(http) for _ in range(self._settings.webpush_senders)]
            await asyncio.gather(self._reload(), *senders)
        finally:
            await http.aclose()

    async def _reload(self) -> None:
        while True:
            await self.subscriptions.reload()
            await asyncio.sleep(self._settings.webpush_reload_s)

    async def _sender(self, http: httpx.AsyncClient) -> None:
        while True:
            squad, body = await self._queue.get()
            push = payload(body, time.time())
            subscription = self.subscriptions.of(squad)
            if push is None or subscription is None:
                continue
            try:
                await self.send(http, squad, subscription, push)
            except Exception:  # noqa: BLE001 - one bad push must not stop the senders
                self.failed += 1
                log.exception("web push to %s failed", squad)

    async def send(
        self, http: httpx.AsyncClient, squad: str, subscription: Subscription, push: Push
    ) -> int | None:
        """POST one push; the push service's status, or None if it could not be reached.
        A subscription the service says is gone is forgotten."""
        endpoint = subscription.endpoint
        headers = {
            "Authorization": self.signer.authorization(endpoint),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(push.ttl_s),
            "Urgency": push.urgency,
        }
        if push.topic:
            headers["Topic"] = push.topic
        content = encrypt(push, subscription)
        try:
            response = await http.post(endpoint, content=content, headers=headers)
        except httpx.HTTPError as exc:
            self.failed += 1
            self._warn(f"push service {urlsplit(endpoint).hostname} unreachable: {exc!r}")
            return None
        status = response.status_code
        if status < 300:
            self.sent += 1
            return status
        self.failed += 1
        if status in GONE:
            await self.subscriptions.remove(squad, endpoint)
        else:
            self._warn(f"push service {urlsplit(endpoint).hostname} answered {status}")
        return status

    def _warn(self, message: str) -> None:
        """One line a minute at most: a push service that is down must not flood the log.
        (The endpoint's path, a capability of the phone's, is never logged.)"""
        now = time.monotonic()
        if now - self._warned_at >= 60:
            self._warned_at = now
            log.warning("web push: %s (%d failed so far)", message, self.failed)
