"""Notifications to citizens (the caller's phone), through a pluggable sender.

The default sender keeps the latest messages in memory and logs them with the phone number
masked: a real deployment plugs in its SMS gateway by implementing :class:`CitizenSender`.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

MESSAGES = {
    "accepted": ("您的诉求 {id} 已由处置队伍受理。", "Your request {id} was accepted by a squad."),
    "en_route": ("处置队伍正赶往现场（{id}）。", "A squad is on its way ({id})."),
    "arrived": ("处置队伍已到达现场（{id}）。", "The squad has arrived ({id})."),
    "resolved": ("您的诉求 {id} 已办结：{note}", "Your request {id} was resolved: {note}"),
    "deferred": (
        "您的诉求 {id} 将于 {until} 前办结：{note}",
        "Your request {id} will be completed by {until}: {note}",
    ),
}


def mask_phone(phone: str) -> str:
    """Phone numbers are personal data: logs show only the last four digits."""
    return "*" * max(len(phone) - 4, 0) + phone[-4:]


@dataclass(frozen=True, slots=True)
class Notification:
    phone: str
    request_id: str
    text: str


class CitizenSender(Protocol):
    async def send(self, notification: Notification) -> None: ...


class MemorySender:
    """Keeps the last ``limit`` notifications (for the demo, the console and tests)."""

    def __init__(self, limit: int = 1000) -> None:
        self.sent: deque[Notification] = deque(maxlen=limit)

    async def send(self, notification: Notification) -> None:
        self.sent.append(notification)
        log.info("notify %s about %s", mask_phone(notification.phone), notification.request_id)


def citizen_text(event: str, request_id: str, *, note: str = "", until: str = "") -> str | None:
    """The zh-CN message (the interface's default language) for a step, or None."""
    template = MESSAGES.get(event)
    return template[0].format(id=request_id, note=note, until=until) if template else None
