"""What a push says, and its encryption.

Pure: :func:`payload` decides from a hub frame whether it wakes the phone (an offer, a
supervision notice) and what the push carries: only what the notification shows and the
assignment to open; the phone fetches the rest over its socket. :func:`encrypt` is the
RFC 8291 message encryption (``aes128gcm``) with a fresh key per message.
"""

from __future__ import annotations

from typing import Any

import http_ece
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec

from dispatch_field import protocol
from server.webpush.subscriptions import Subscription, b64url_bytes

MIN_TTL_S = 60  # a push service keeps a message this long at least
NOTICE_TTL_S = 3600


class Push(msgspec.Struct, frozen=True):
    """One push to send: the JSON the phone's service worker reads, how long the push
    service may hold it (``ttl_s``), and the ``topic`` that replaces an older undelivered
    push about the same assignment."""

    data: dict[str, Any]
    ttl_s: int
    topic: str = ""
    urgency: str = "high"


def payload(body: bytes, now: float) -> Push | None:
    """The push for a numbered frame's ``body`` (as stored in the outbox), or None if that
    frame does not wake a phone (a revoke: the phone learns it on its next connection)."""
    try:
        frame = protocol.decode_hub(body)
    except msgspec.DecodeError:
        return None
    match frame:
        case protocol.Offer(assignment=assignment, request=request, respond_by=respond_by):
            data = {
                "t": "offer",
                "assignment": assignment,
                "request": request.id,
                "category": request.category,
                "address": request.address,
                "respond_by": respond_by,
            }
            # Past respond_by the offer is gone: the push service may drop it then.
            ttl = max(MIN_TTL_S, int(respond_by - now))
            return Push(data, ttl, _topic(assignment))
        case protocol.Notice(notice=notice):
            data = {
                "t": "notice",
                "request": notice.request,
                "kind": notice.kind,
                "level": notice.level,
            }
            return Push(data, NOTICE_TTL_S, urgency="normal")
    return None


def _topic(assignment: str) -> str:
    """RFC 8030 Topic: at most 32 characters of the base64url alphabet."""
    cleaned = "".join(c for c in assignment if c.isalnum() or c in "-_")
    return cleaned[:32]


_json = msgspec.json.Encoder()


def encrypt(push: Push, subscription: Subscription) -> bytes:
    """The request body for the push service: ``push.data`` as JSON, encrypted for the
    phone's keys (RFC 8291 ``aes128gcm``; the sender's one-off public key travels in the
    body's header)."""
    sender_key = ec.generate_private_key(ec.SECP256R1())
    encrypted: bytes = http_ece.encrypt(
        _json.encode(push.data),
        private_key=sender_key,
        dh=b64url_bytes(subscription.keys.p256dh),
        auth_secret=b64url_bytes(subscription.keys.auth),
        version="aes128gcm",
    )
    return encrypted
