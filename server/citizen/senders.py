"""Senders: how a message leaves the hub (``DISPATCH_CITIZEN_SENDER``).

- ``log`` (default): one JSON line per message in ``<data_dir>/citizen-messages.log`` (0600:
  it holds phone numbers in full), for a deployment without an SMS gateway yet, and the demo.
- ``webhook``: an HTTP POST to the SMS gateway at ``DISPATCH_CITIZEN_WEBHOOK_URL``.
- :class:`MemorySender` keeps messages in memory (in-process tests).

The server log shows a phone number masked, never the webhook's token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from server.citizen.compose import Message
from server.citizen.delivery import Attempt, Outcome, http_outcome, retry_after_s
from server.citizen.outbox import CitizenSender, mask_phone
from server.group_commit import GroupCommit
from server.outbound import tls_context
from server.private_files import FILE_MODE, private_dir
from server.settings import Settings, SettingsError

log = logging.getLogger(__name__)

LOG_FILE = "citizen-messages.log"


def payload(message: Message) -> dict[str, Any]:
    """What a sender hands on: the gateway's JSON body, the log file's line."""
    return {
        "id": message.id,
        "idempotency_key": message.key,
        "phone": message.phone,
        "text": message.text,
        "request": message.request,
        "event": message.event,
        "lang": message.lang,
    }


class LogFileSender:
    """Appends each message to a 0600 file, one JSON line (with ``sent_at``). A message sent
    again after a crash (see the outbox) appears twice with the same ``idempotency_key``.
    The lines of messages sent at the same moment (a delivery pass) go in one write, from one
    worker-thread hop (:class:`~server.group_commit.GroupCommit`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        private_dir(self.path.parent)
        self._appends: GroupCommit[bytes, OSError | None] = GroupCommit(self._append_all)

    async def send(self, message: Message) -> Attempt:
        line = (
            json.dumps(payload(message) | {"sent_at": round(time.time(), 3)}, ensure_ascii=False)
            + "\n"
        )
        error = await self._appends.submit(line.encode())
        if error is not None:
            return Attempt(Outcome.RETRY, error=f"log file: {error.strerror or error}")
        log.info(
            "citizen message %s to %s (%s)", message.id, mask_phone(message.phone), message.event
        )
        return Attempt(Outcome.DELIVERED)

    async def _append_all(self, lines: Sequence[bytes]) -> list[OSError | None]:
        try:
            await asyncio.to_thread(self._append, b"".join(lines))
        except OSError as exc:
            return [exc] * len(lines)
        return [None] * len(lines)

    def _append(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # an existing file keeps its mode through os.open
            # One write of whole lines (O_APPEND): lines of two processes never mix. A short
            # write (a full disk) is an error for every line of it: they are sent again.
            if os.write(fd, data) != len(data):
                raise OSError(28, "short write (disk full?)")
        finally:
            os.close(fd)

    async def close(self) -> None:
        return None


class WebhookSender:
    """POSTs ``{id, idempotency_key, phone, text, request, event, lang}`` as JSON with an
    ``Idempotency-Key`` header (and ``Authorization: Bearer <token>`` when a token is set).
    2xx: delivered; 4xx other than 408/429: failed for good; anything else: retry."""

    def __init__(self, url: str, token: str | None, timeout_s: float) -> None:
        self._url = url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # No redirects: a gateway moved elsewhere is a configuration to fix, not a place to
        # send phone numbers and the token to.
        self._client = httpx.AsyncClient(
            timeout=timeout_s, headers=headers, follow_redirects=False, verify=tls_context()
        )

    async def send(self, message: Message) -> Attempt:
        try:
            response = await self._client.post(
                self._url, json=payload(message), headers={"Idempotency-Key": message.key}
            )
        except httpx.TimeoutException:
            return Attempt(Outcome.RETRY, error="timeout")
        except httpx.HTTPError as exc:
            # The exception's text may carry the URL; its type says enough.
            return Attempt(Outcome.RETRY, error=type(exc).__name__)
        outcome = http_outcome(response.status_code)
        after = retry_after_s(response.headers.get("retry-after"), time.time())
        error = "" if outcome is Outcome.DELIVERED else f"HTTP {response.status_code}"
        return Attempt(outcome, response.status_code, error, after)

    async def close(self) -> None:
        await self._client.aclose()


class MemorySender:
    """Keeps what it sends (tests, and a hub embedded in a test process)."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, message: Message) -> Attempt:
        self.sent.append(message)
        return Attempt(Outcome.DELIVERED)

    async def close(self) -> None:
        return None


def make_sender(settings: Settings) -> CitizenSender:
    """The sender ``settings`` name. Raises SettingsError for a webhook without a URL."""
    kind = settings.citizen_sender
    if kind == "log":
        return LogFileSender(Path(settings.data_dir) / LOG_FILE)
    if kind == "webhook":
        url = settings.citizen_webhook_url
        if not url or not url.startswith(("http://", "https://")):
            raise SettingsError(
                "DISPATCH_CITIZEN_WEBHOOK_URL: an http(s) URL is required with "
                "DISPATCH_CITIZEN_SENDER=webhook"
            )
        return WebhookSender(
            url, settings.citizen_webhook_token, settings.citizen_webhook_timeout_s
        )
    if kind == "memory":
        return MemorySender()
    raise SettingsError(f"DISPATCH_CITIZEN_SENDER: {kind!r} is not log, webhook or memory")
