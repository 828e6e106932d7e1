"""Settings, read from the environment once at start-up.

Every tunable has a documented default here and can be overridden with an environment
variable ``DISPATCH_<NAME>`` (``offer_window_s`` -> ``DISPATCH_OFFER_WINDOW_S``). Connection
settings use their conventional names: ``REDIS_URL``, ``DATABASE_URL``, ``DISPATCH_CONFIG``,
``DISPATCH_TOKENS``.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from dispatch_field.limits import FieldLimits

Role = Literal["admin", "calltaker", "center", "unit", "wall"]
# Roles that get a generated token when DISPATCH_TOKENS is unset (``unit`` needs a unit code:
# it is given as ``unit=<code>:token``).
ROLES: tuple[Role, ...] = ("admin", "calltaker", "center", "wall")


_UNIT_CODE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class SettingsError(ValueError):
    """An environment variable could not be read as the setting it names."""


class Settings(FieldLimits, kw_only=True):
    # The phone-facing limits (heartbeat, offline time, frame sizes and rates, offer window,
    # arrival radius...) are inherited: defaults and meaning in dispatch_field/limits.py.

    # --- connections (conventional names, not DISPATCH_-prefixed) ---
    redis_url: str | None = None  # REDIS_URL; None: start the embedded Redis
    database_url: str | None = None  # DATABASE_URL; None: SQLite file in data_dir
    config_path: str | None = None  # DISPATCH_CONFIG; None: the shipped Luoyang city
    tokens: str | None = None  # DISPATCH_TOKENS "role:token,..." (a unit desk:
    # "unit=<code>:token"); each entry is a bootstrap account; None: generated

    # --- tunables: DISPATCH_<NAME> ---
    data_dir: str = "./var"  # embedded Redis data (AOF) and the SQLite ledger
    redis_connections: int = 64  # pool size per hub process; callers wait for a free one
    redis_cluster: bool = False  # REDIS_URL names a node of a Redis Cluster (a
    # ``redis+cluster://host:port,host:port`` URL says so by itself): see server.store.cluster
    # replicas that must have a new request (intake) before it is answered: ``WAIT n`` after
    # the write (0: none; Redis replicates asynchronously, see docs/benchmarks.md "Redis Cluster")
    redis_wait_replicas: Annotated[int, Meta(ge=0, le=8)] = 0
    redis_wait_timeout_ms: Annotated[int, Meta(ge=1)] = 500  # the WAIT's longest wait
    time_scale: Annotated[float, Meta(gt=0, le=1000)] = 1.0  # multiplies every category limit
    # (accept, arrive, resolve, promise cap) and every escalation interval: 1/N for the
    # simulation at --speed N runs the real rules N times faster; tests use limits of seconds
    offline_alert_s: float = 120.0  # a squad holding accepted work offline this long: the
    # center is told (an event on each of its requests)
    # request numbers a process takes from the day's counter at a time and hands out itself
    # (a recovered counter skips 1000 numbers: server.ids.RECOVERY_MARGIN, so keep it small)
    request_id_block: Annotated[int, Meta(ge=1, le=200)] = 50
    outbox_max_frames: int = 1000  # retention of unacknowledged frames per squad; a resume
    # from before the oldest kept frame gets a resync frame
    hub_beat_s: float = 2.0  # each hub process records that it is alive this often
    hub_dead_after_s: float = 10.0  # a hub silent this long is dead: its squads go offline
    close_timeout_s: float = 2.0  # a closing phone that takes nothing is cut off after this
    position_max_age_s: float = 120.0  # older fixes do not count for dispatch
    position_flush_ms: float = 10.0  # positions are batched into one Redis pipeline
    # a squad holding work: one point of its track per this (the center's map; see
    # server.store.tracks), the newest points a track keeps, and how long after its last
    track_interval_s: Annotated[float, Meta(gt=0)] = 10.0
    track_points: Annotated[int, Meta(ge=10, le=100_000)] = 360
    track_keep_s: Annotated[float, Meta(gt=0)] = 6 * 3600.0
    ack_flush_ms: float = 200.0  # a phone's ack not followed by a command is recorded after this
    search_radius_km: float = 60.0  # largest candidate search radius around the scene
    search_first_radius_km: float = 1.0  # the search starts here and widens 4x at a time
    search_count: int = 256  # nearest positions examined per search
    rank_count: int = 5  # candidates ranked by geodesic distance and tried in order (a claim
    # race that takes all of them makes the dispatcher search again)
    squad_capacity: int = 1  # default concurrent assignments of a new squad
    timer_poll_ms: float = 200.0  # how often this process looks for due timers
    timer_lease_s: float = 10.0  # a claimed timer returns to others if not done by then
    queue_sweep_s: float = 2.0  # how often waiting requests are tried again
    events_maxlen: int = 1_000_000  # approximate bound of each unit's event stream
    demo: bool = False  # create demo squads and print their tokens at start
    ledger_in_hub: bool = True  # run the ledger writer in this process (0: a separate
    # ``python -m server.ledger`` records; the hub still reads the ledger)
    live_retention_h: Annotated[float, Meta(ge=0)] = 0.0  # a closed request's live state
    # leaves Redis this long after its last event, once the ledger holds all of it (the
    # ledger then answers for it); 0: kept in Redis for good. Swept where the writer runs.
    session_hours: float = 12.0  # a browser sign-in (cookie ld_session) lasts this long
    wall_session_days: Annotated[float, Meta(gt=0, le=400)] = 90.0  # a wall display's
    # sign-in lasts this long instead: a wall signs in once, then runs unattended (its role
    # only reads the map; signing out or disabling the account ends it at once)
    cookie_secure: bool = False  # DISPATCH_COOKIE_SECURE=1: the cookie only over HTTPS (set it
    # behind a TLS proxy)
    auth_cache_s: float = 30.0  # a verified token or session is trusted this long without a
    # database read: a disabled account or revoked token stops working within this time
    auth_failures_per_min: int = 20  # wrong tokens/passwords from one address per minute
    # before it gets 429

    # --- limits on what one client may take (server/guard.py, server/net.py) ---
    header_timeout_s: float = 10.0  # request headers (or a WebSocket handshake) must be in by then
    max_connections: int = 0  # concurrent connections; 0: open files - redis_connections - 128
    max_connections_per_address: int = 1000  # per client IP (carrier NAT shares them); 0: no cap
    max_body_bytes: int = 65_536  # larger request bodies get 413 without being read
    trusted_proxies: str | None = None  # addresses (comma-separated, or "*") of reverse
    # proxies whose X-Forwarded-For names the client: per-address limits then count the
    # client, not the proxy. Only where nothing but the proxy can reach the hub.

    # --- the citizen told (server/citizen/) ---
    citizen_sender: Literal["log", "webhook", "memory"] = "log"  # where messages to callers'
    # phones go: a 0600 JSON-lines file <data_dir>/citizen-messages.log, an SMS gateway's
    # webhook, or memory (tests)
    citizen_webhook_url: str | None = None  # the gateway's URL (required with webhook)
    citizen_webhook_token: str | None = None  # sent as "Authorization: Bearer"; never logged
    citizen_webhook_timeout_s: float = 10.0  # an answer slower than this is a failed attempt;
    # a claimed message is this process's for this long plus 5 s, then another may send it
    citizen_retry_base_s: float = 1.0  # the first retry waits ~this; each next one twice as long
    citizen_retry_cap_s: float = 300.0  # no retry waits longer (unless the gateway's
    # Retry-After asks for more)
    citizen_max_attempts: int = 20  # attempts before a message is recorded as failed
    citizen_max_age_s: float = 86_400.0  # a message not delivered this long after it was
    # queued is recorded as failed
    citizen_poll_s: float = 0.5  # how often each process looks for messages due
    citizen_keep_s: int = 172_800  # a request's message keys are remembered this long after
    # its last message (longer than command_memory_s: a retried step never sends twice)
    citizen_templates: str | None = None  # the message templates file; None: the shipped one

    # --- Web Push to squads' phones (server/webpush/) ---
    webpush_private_key: str | None = None  # the VAPID private key (EC P-256) as base64url
    # of its 32 bytes (`python -m server.webpush` makes one): for hubs that share no data
    # directory (containers); a secret, never logged. Set, it wins over webpush_key_file
    webpush_key_file: str | None = None  # PEM of the VAPID key that every hub process of the
    # city shares (a phone's subscription is bound to it); None:
    # <data_dir>/webpush-vapid.pem, made on the first start (0600)
    webpush_subject: str = "mailto:dispatch@localhost"  # VAPID ``sub``: how a push service
    # reaches the operator (mailto: or https: URL)
    webpush_hosts: str = (  # push services a subscription may name, comma-separated, "*."
        # for any subdomain: a phone cannot make the hub post anywhere else. https only,
        # except to a loopback host named here (a local relay, the tests)
        "fcm.googleapis.com,updates.push.services.mozilla.com,web.push.apple.com,"
        "*.notify.windows.com"
    )
    webpush_timeout_s: float = 10.0  # a push service slower than this: that push is dropped
    # (the offer still waits in the squad's outbox for its socket)
    webpush_queue: int = 10_000  # pushes waiting to be sent; beyond it new ones are dropped
    webpush_senders: Annotated[int, Meta(ge=1, le=64)] = 4  # pushes in flight at once
    webpush_reload_s: float = 2.0  # how often a process checks for subscriptions that
    # another process recorded

    # --- the live center feed (/ws/center) ---
    feed_batch: int = 200  # most frames in one WebSocket message (and one stream read)
    feed_queue_frames: int = 4096  # per-connection bound; overflow closes SLOW_CONSUMER

    # --- the intake console (server/calltaker/) ---
    duplicate_radius_m: Annotated[float, Meta(gt=0, le=10_000)] = 300.0  # a request of the
    # same category this close to a new one, received within duplicate_window_s, is shown
    # to the call-taker as a possible duplicate before sending
    duplicate_window_s: Annotated[float, Meta(gt=0, le=30 * 86_400)] = 7200.0  # (multiplied
    # by time_scale, as every limit)

    # --- supervision notices (server/notices.py) ---
    notice_escalate_s: Annotated[float, Meta(gt=0)] = 1800.0  # a notice whose item stays
    # open escalates one level this often (multiplied by time_scale)
    notice_max_level: Annotated[int, Meta(ge=1, le=20)] = 5  # escalation stops here (the
    # top-level notice stays open until the item is done)

    # --- operations (server/metrics.py, server/app.py) ---
    metrics_port: Annotated[int, Meta(ge=1, le=65535)] | None = None  # a port of its own
    # for /metrics, without sign-in (keep it off the public network); None: only the
    # main port's GET /metrics, for admin
    metrics_host: str = "127.0.0.1"  # where that port listens
    metrics_sample_s: Annotated[float, Meta(gt=0)] = 5.0  # Redis-read figures this often
    log_format: Literal["text", "json"] = "text"  # json: one JSON object per line
    drain_wait_s: Annotated[float, Meta(ge=0)] = 1.0  # at shutdown, not ready this long
    # before the phones are told (a load balancer's health check notices first)
    drain_spread_s: Annotated[float, Meta(ge=0)] = 3.0  # the phones are told to reconnect
    # elsewhere (close 1012) over this long, not all at once

    # --- the center's reports (server/reports/) ---
    spot_check_poll_s: Annotated[float, Meta(ge=0)] = 3600.0  # how often a process checks
    # whether last week's spot checks are drawn, and draws them if not; 0: only on demand
    reports_policy: str | None = None  # the monthly score's weighting, ranking, spot-check
    # size and fortnight thresholds (TOML); None: the shipped server/reports/policy.toml

    def role_tokens(self) -> dict[str, Role]:
        """Token -> role. Raises SettingsError on a malformed DISPATCH_TOKENS; no tokens at all
        (not even generated ones: see load_settings) gives an empty mapping."""
        if self.tokens is None:
            return {}
        return {token: role for role, _unit, token in self.bootstrap_tokens()}

    def bootstrap_tokens(self) -> list[tuple[Role, str, str]]:
        """(role, unit code or "", token) of each DISPATCH_TOKENS entry, in order. An entry is
        ``role:token``, or ``unit=<code>:token`` for one unit's desk. Raises SettingsError on
        a malformed entry or a token given twice."""
        if self.tokens is None:
            return []
        result: list[tuple[Role, str, str]] = []
        seen: set[str] = set()
        for pair in (self.tokens or "").split(","):
            if not pair.strip():
                continue
            role, sep, token = pair.strip().partition(":")
            role, _, unit = role.partition("=")
            if (
                not sep
                or role not in (*ROLES, "unit")
                or len(token) < 8
                or (role == "unit") != bool(_UNIT_CODE.match(unit))
            ):
                raise SettingsError(
                    "DISPATCH_TOKENS: each entry must be role:token with role one of "
                    f"{', '.join(ROLES)} (or unit=<unit code>:token) and a token of at least "
                    "8 characters"
                )
            if token in seen:
                raise SettingsError("DISPATCH_TOKENS: a token may serve only one role")
            seen.add(token)
            result.append((role, unit, token))  # type: ignore[arg-type]
        if not result:
            raise SettingsError("DISPATCH_TOKENS: no role:token entries (unset it to generate)")
        return result


def generated_tokens() -> str:
    return ",".join(f"{role}:{secrets.token_urlsafe(18)}" for role in ROLES)


_CONVENTIONAL = {
    "redis_url": "REDIS_URL",
    "database_url": "DATABASE_URL",
    "config_path": "DISPATCH_CONFIG",
    "tokens": "DISPATCH_TOKENS",
}


def env_name(setting: str) -> str:
    """The environment variable of a setting."""
    return _CONVENTIONAL.get(setting, f"DISPATCH_{setting.upper()}")


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from ``env`` (default ``os.environ``), then ``overrides``.

    Without DISPATCH_TOKENS, tokens are generated (and printed by the runner).
    """
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for name in Settings.__struct_fields__:
        if env.get(env_name(name), "") != "":
            values[name] = env[env_name(name)]
    values.update(overrides)
    try:
        settings = msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        field = str(exc).rpartition("$.")[2].rstrip("`")
        raise SettingsError(f"{env_name(field)}: {exc}") from None
    if not settings.tokens:
        settings.tokens = generated_tokens()
    settings.role_tokens()  # fail at start, not at the first request
    return settings
