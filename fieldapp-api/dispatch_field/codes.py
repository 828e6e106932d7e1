"""Error codes (in ``error`` frames) and WebSocket close codes, named once.

Close codes use the private range 4000-4999 in two documented bands:

* ``4000-4099`` **transient**: the phone reconnects with backoff and jitter, sends ``hello``
  with its ``last_seq`` and gets everything it missed.
* ``4100-4199`` **terminal**: reconnecting will not help until something changes (token,
  configuration, app version). The phone shows the reason and stops.

Standard codes may also appear: 1000 (normal), 1001 (hub going away: transient), 1009 (frame
above the transport limit: terminal for that frame, the phone may reconnect), 1013 (try again
later: the hub cannot reach its live state now; reconnect with backoff and resume).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class CloseCode(IntEnum):
    # transient: reconnect and resume
    SERVER_RESTART = 4000
    SLOW_CONSUMER = 4001  # the send queue overflowed; resume to get the backlog
    HEARTBEAT_TIMEOUT = 4002  # nothing heard within the offline time
    INTERNAL_ERROR = 4003
    HELLO_TIMEOUT = 4004  # no hello within the handshake time
    RATE_LIMITED = 4005  # frames or commands faster than DISPATCH_FRAME_RATE / _COMMAND_RATE
    HELLO_THROTTLED = 4006  # too many failed hellos from this address: retry later
    # terminal: do not reconnect without a change
    AUTH_FAILED = 4100
    HELLO_REQUIRED = 4101  # the first frame was not a valid hello
    REPLACED = 4102  # a newer connection of the same squad took over
    UNSUPPORTED_SUBPROTOCOL = 4103
    FORBIDDEN = 4104  # valid credentials whose role may not use this socket (the center feed)

    @property
    def reconnect(self) -> bool:
        """Whether the phone should reconnect after this close."""
        return self.value < 4100


# RFC 6455 "try again later", the one standard code the hub sends itself: its live state
# (Redis) is unreachable now; the phone reconnects with backoff and resumes.
TRY_AGAIN_LATER = 1013
# RFC 6455 "service restart": this hub process is draining for a restart; the phone
# reconnects (the proxy sends it to another process) after its usual random delay, and
# resumes. Sent spread over DISPATCH_DRAIN_SPREAD_S, so the phones do not all come back at
# once.
SERVICE_RESTART = 1012


def should_reconnect(code: int) -> bool:
    """Reconnect policy for any close code a phone may see."""
    return 4000 <= code < 4100 or code in (1001, 1006, 1009, 1011, 1012, 1013)


class ErrorCode(StrEnum):
    """``error.code`` values. After ``hello`` a frame-level error does not close the connection
    by itself (except ``rate_limited``); before ``hello`` every refused frame ends it (4101)."""

    MALFORMED = "malformed"  # not MessagePack/JSON, or not a map
    UNKNOWN_TYPE = "unknown_type"  # ``t`` names no frame type
    INVALID = "invalid"  # a field is missing, of the wrong type or out of range
    TOO_LARGE = "too_large"  # above DISPATCH_MAX_FRAME_BYTES
    HELLO_FIRST = "hello_first"  # a frame before hello (connection then closes 4101)
    AUTH_FAILED = "auth_failed"  # (connection then closes 4100)
    UNEXPECTED = "unexpected"  # a frame that is valid but has no meaning now (second hello)
    UNKNOWN_ASSIGNMENT = "unknown_assignment"  # not an assignment of this squad
    INVALID_TRANSITION = "invalid_transition"  # e.g. resolve before accept
    INVALID_TIME = "invalid_time"  # ``at``/``until`` fails the sanity checks
    BUSY = "busy"  # the hub could not complete the command now: retry with the same id
    RATE_LIMITED = "rate_limited"  # too fast (connection then closes 4005, or 4006 for hellos)
