"""The hub's limits and timings that a phone must live with, with their defaults, named once.

These are part of the field contract: a phone developer needs them (how often the hub pings,
how long a squad may be silent, how large and how fast frames may be, how long an offer
waits), so they are defined and documented here, next to the protocol, and the hub takes its
defaults from this class (``server.settings.Settings`` inherits it, so each is still set with
``DISPATCH_<NAME>``). ``fieldapp-api/generate.py`` writes the README's settings table from
it, in this order: each field's description is that table's text.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta


class FieldLimits(msgspec.Struct, kw_only=True):
    """Defaults of the phone-facing settings (see the module's docstring)."""

    heartbeat_s: Annotated[float, Meta(description="WebSocket ping interval")] = 15.0
    offline_after_s: Annotated[
        float,
        Meta(
            description="silence (or no socket) after which a squad is offline and its "
            "unanswered offers move on"
        ),
    ] = 45.0
    hello_timeout_s: Annotated[float, Meta(description="time allowed for the first frame")] = 10.0
    max_frame_bytes: Annotated[int, Meta(description="larger frames get a too_large error")] = 4096
    send_queue_frames: Annotated[
        int, Meta(description="per-connection bound; overflow closes SLOW_CONSUMER")
    ] = 256
    clock_skew_s: Annotated[
        float, Meta(description="how far in the future a phone's ``at`` may be")
    ] = 300.0
    step_delay_max_s: Annotated[
        float,
        Meta(
            description="a step's ``at`` counts (on the hub's clock, by the phone's offset "
            "read from its positions) if at most this old, or, early in a connection, a step "
            "queued offline, no older than the end of the squad's last connection; an earlier "
            "``at`` counts when the hub received the step"
        ),
    ] = 30.0
    promise_horizon_s: Annotated[
        float, Meta(description="a defer's until may be at most this far ahead (30 d)")
    ] = 2_592_000.0
    frame_rate: Annotated[
        float, Meta(description="frames per second one phone may send on average (normal: ~1)")
    ] = 50.0
    frame_burst: Annotated[
        int, Meta(description="frames a phone may send at once above frame_rate")
    ] = 100
    command_rate: Annotated[
        float, Meta(description="commands (accept ... dispute) per second per phone on average")
    ] = 10.0
    command_burst: Annotated[
        int, Meta(description="commands a phone may send at once above command_rate")
    ] = 20
    hello_failures_per_min: Annotated[
        float, Meta(description="failed hellos per client IP; more: refused for a while")
    ] = 10.0
    command_memory_s: Annotated[
        int, Meta(description="how long a command id is remembered for retries")
    ] = 86_400
    offer_window_s: Annotated[float, Meta(description="time a squad has to accept an offer")] = 60.0
    arrival_radius_m: Annotated[
        float, Meta(description="an en-route squad this close to the scene has arrived")
    ] = 150.0
