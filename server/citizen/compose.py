"""Which message a step sends to the caller, and what it says: pure functions from a request's
stored fields to :class:`Message` records, ready for the outbox.

A message's ``key`` (its idempotency key) is ``<request>:<kind>:<discriminator>``, the same
every time the same step is carried out: intake and a transfer happen once per request
(discriminator ``1``), a squad's step is known by its squad and command id (a phone retries a
command with the same id). Whoever queues a message twice queues it once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import msgspec

from server.citizen.messages import (
    Lang,
    Templates,
    lang_of,
    local_time,
    reason_words,
    render,
    service_name,
)
from server.city import City

# The message kind of each lifecycle event that tells the caller.
STEP_KINDS = {
    "accepted": "accepted",
    "en_route": "en_route",
    "arrived": "arrived",
    "deferred": "deferred",
    "resolved": "resolved",
    "cancelled": "cancelled",
}


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One message to a caller's phone, as the outbox keeps it."""

    id: str  # short and unique: derived from the key
    key: str  # idempotency key, sent to the gateway with the message
    request: str
    unit: str  # whose outbox and event stream it is in
    event: str  # the message kind: received, transferred, accepted, ...
    lang: Lang
    phone: str
    text: str
    queued_at: float


def message_key(request_id: str, kind: str, discriminator: str) -> str:
    return f"{request_id}:{kind}:{discriminator}"


def command_discriminator(squad: str, command_id: str) -> str:
    """A squad's command, in a form fit for an HTTP header whatever the phone's id holds."""
    return hashlib.sha256(f"{squad}/{command_id}".encode()).hexdigest()[:16]


def _message(
    fields: Mapping[str, str], unit: str, kind: str, discriminator: str, text: str, now: float
) -> Message:
    request_id = fields["id"]
    key = message_key(request_id, kind, discriminator)
    return Message(
        id=hashlib.sha256(key.encode()).hexdigest()[:20],
        key=key,
        request=request_id,
        unit=unit,
        event=kind,
        lang=lang_of(fields.get("lang")),
        phone=fields.get("caller_phone", ""),
        text=text,
        queued_at=round(now, 3),
    )


def intake_messages(
    templates: Templates, city: City, unit: str, fields: Mapping[str, str], now: float
) -> list[Message]:
    """What the caller hears once the request is stored: its number (and for a linkage
    request the unit handling it); for one passed to 110/119/120, where it went."""
    if not fields.get("caller_phone"):
        return []
    request_id, lang = fields["id"], lang_of(fields.get("lang"))
    route = fields.get("route", "linkage")
    handler = city.unit(unit) if route == "linkage" else None
    if handler is not None:
        name = handler.name_zh if lang == "zh" else handler.name_en
        text = render(templates, "received_unit", lang, request_id, unit=name)
        kind = "received_unit"
    else:
        text, kind = render(templates, "received", lang, request_id), "received"
    messages = [_message(fields, unit, kind, "1", text, now)]
    if route != "linkage":
        service = service_name(templates, route, lang)
        text = render(templates, "transferred", lang, request_id, service=service)
        messages.append(_message(fields, unit, "transferred", "1", text, now))
    return messages


def step_message(
    templates: Templates,
    city: City,
    unit: str,
    fields: Mapping[str, str],
    event: str,
    discriminator: str,
    now: float,
    *,
    note: str = "",
    until: float | None = None,
    reason: str = "",
) -> Message | None:
    """The message of lifecycle ``event`` (None if that event tells the caller nothing, or
    there is no number to tell). Raises ValueError (OverflowError, OSError) if ``until`` is
    not a time the calendar can show."""
    kind = STEP_KINDS.get(event)
    if kind is None or not fields.get("caller_phone"):
        return None
    lang = lang_of(fields.get("lang"))
    shown = local_time(until, city.zone) if until is not None else ""
    text = render(
        templates,
        kind,
        lang,
        fields["id"],
        note=note,
        until=shown,
        reason=reason_words(templates, reason, lang) if reason else "",
    )
    return _message(fields, unit, kind, discriminator, text, now)
