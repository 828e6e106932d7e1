"""Every Redis key the project uses, as small functions.

Which keys live together, and why (Redis Cluster: see also server.store.cluster)
-------------------------------------------------------------------------------

A Redis Cluster runs a multi-key command, a Lua script or a MULTI/EXEC only when all its keys
hash to one slot; ``{...}`` in a key is its hash tag (only the tag is hashed). So:

* ``{u:<unit>}`` -- everything of one unit: its squads (hash, outbox, jobs, track, command
  ids), requests (hash, timeline, tried set, notices, citizen messages), assignments, the
  GEO set and fix times, availability and free capacity, queue, open requests, timers, due
  citizen messages, stats, and the unit's event stream. Every script (``lua/*.lua``) and
  every transaction names keys of ONE unit: a dispatch step touches a request, a squad, the
  unit's queue and timers at once, and a squad belongs to one unit. A request moved to
  another unit (``move.lua``) is written in the new unit's slot by one script, and removed
  from the old one by a second step (server.center.moves). Pipelines may name several
  units (a position flush, the ledger's reads): they are not atomic and need not be; on a
  cluster redis-py splits them per node.
* ``{ids}`` -- the day's request counter and its marker: ``sequence.lua`` reads both.
* ``{push}`` -- the Web Push subscriptions and their version, changed in one transaction.
* no tag -- the global keys below (id -> unit indexes, units, idempotency reservations,
  hubs and their squads, channels): only ever single-key commands, each in its own slot.

What spans units, and how it avoids a cross-slot command:

* the center feed (server.feed.broker) reads every unit's stream: one blocking XREAD on a
  single Redis; on a cluster one XREAD per unit in a pipeline, polled;
* the ledger writer (server.ledger.streams) reads each unit's stream with its own
  XREADGROUP / XAUTOCLAIM / XACK, in a pipeline;
* a request's creation writes the global request -> unit index and the unit's keys: two
  commands (on a cluster the index first, alone, so that a request is never stored without
  its index entry); presence (``hubs``, ``hub:<id>:squads``) names squads as "unit/squad"
  and settles each with its unit's script;
* pushes between processes: one channel per hub process (sharded pub/sub on Redis 7
  clusters: server.broker).
"""

from __future__ import annotations

PREFIX = "ld"  # linkage dispatch


def _u(unit: str) -> str:
    return f"{PREFIX}:{{u:{unit}}}"


# --- per unit ----------------------------------------------------------------------------


def geo(unit: str) -> str:
    """GEO set: last position of every online squad of the unit."""
    return f"{_u(unit)}:geo"


def fix_times(unit: str) -> str:
    """Sorted set: squad -> time of its last position fix (epoch s)."""
    return f"{_u(unit)}:fixt"


def available(unit: str) -> str:
    """Set: squads on duty and online."""
    return f"{_u(unit)}:avail"


def free(unit: str) -> str:
    """Hash: squad -> free capacity (capacity minus active assignments)."""
    return f"{_u(unit)}:free"


def skills(unit: str) -> str:
    """Hash: squad -> ",cat,cat," (or "*" for every category of the unit)."""
    return f"{_u(unit)}:skills"


def queue(unit: str) -> str:
    """Sorted set: requests waiting for a squad, by time received."""
    return f"{_u(unit)}:queue"


def open_requests(unit: str) -> str:
    """Sorted set: the unit's requests not yet resolved, by time received (the wall map)."""
    return f"{_u(unit)}:open"


def timers(unit: str) -> str:
    """Sorted set: "kind:id" -> due time (epoch ms). Claimed with a lease by any process."""
    return f"{_u(unit)}:timers"


def events(unit: str) -> str:
    """Stream: every event of the unit's requests and squads, in order."""
    return f"{_u(unit)}:events"


def stats(unit: str) -> str:
    """Hash: counters (non_responses, offers, ...)."""
    return f"{_u(unit)}:stats"


def squad(unit: str, squad_id: str) -> str:
    """Hash: name, capacity, duty, online, hub, conn, token_hash, seq, acked, created; and
    while its draining hub is moving it, aside (``step_aside.lua``: not a candidate until
    its hello on another hub)."""
    return f"{_u(unit)}:sq:{squad_id}"


def outbox(unit: str, squad_id: str) -> str:
    """Sorted set: numbered frames kept until acknowledged; score = seq,
    member = 12-digit seq + frame body (see dispatch_field.protocol.stamp_seq)."""
    return f"{_u(unit)}:sq:{squad_id}:out"


def jobs(unit: str, squad_id: str) -> str:
    """Set: the squad's active assignment ids."""
    return f"{_u(unit)}:sq:{squad_id}:jobs"


def track(unit: str, squad_id: str) -> str:
    """Stream: recent position samples of the squad while it holds work (``p``: "lat,lon";
    the id is the time), capped and expiring (see server.store.tracks)."""
    return f"{_u(unit)}:sq:{squad_id}:track"


def command(unit: str, squad_id: str, command_id: str) -> str:
    """String: outcome of a command id, kept for retries."""
    return f"{_u(unit)}:sq:{squad_id}:cmd:{command_id}"


def request(unit: str, request_id: str) -> str:
    """Hash: the request's fields and state (see server.store.requests)."""
    return f"{_u(unit)}:rq:{request_id}"


def timeline(unit: str, request_id: str) -> str:
    """List: the request's events as JSON, oldest first."""
    return f"{_u(unit)}:rq:{request_id}:tl"


def tried(unit: str, request_id: str) -> str:
    """Set: squads already offered this request (passed over first next time)."""
    return f"{_u(unit)}:rq:{request_id}:tried"


def assignment(unit: str, assignment_id: str) -> str:
    """Hash: request, squad, state, respond_by."""
    return f"{_u(unit)}:as:{assignment_id}"


def citizen_messages(unit: str, request_id: str) -> str:
    """Hash: the request's messages to the caller's phone (see server.citizen.outbox): n,
    head, k:<idempotency key> -> n, m:<n> message, a:<n> attempts, s:<n> state. Expires
    ``citizen_keep_s`` after its last message is done."""
    return f"{_u(unit)}:rq:{request_id}:cz"


def citizen_due(unit: str) -> str:
    """Sorted set: request id -> when its next message to the caller is due (epoch ms).
    Claimed with a lease (due.lua) by any process."""
    return f"{_u(unit)}:czdue"


# --- global (single-key commands only) ----------------------------------------------------


def request_sequence(day: str) -> str:
    """String: the last request number given out on ``day`` (``YYYYMMDD``, the city's date;
    see server.ids). Expires a few days after."""
    return f"{PREFIX}:{{ids}}:seq:{day}"


def sequence_marker() -> str:
    """String: present once this Redis has given out a request number. Missing beside a
    ledger that has numbers: Redis started empty, its last numbers are unknown."""
    return f"{PREFIX}:{{ids}}:counted"


def request_units() -> str:
    """Hash: request id -> unit (requests that left the flow: "-")."""
    return f"{PREFIX}:index:request_unit"


def idempotency(scope: str, key: str) -> str:
    """String: the request id an intake ``Idempotency-Key`` reserved (kept a day)."""
    return f"{PREFIX}:idem:{scope}:{key}"


def squad_units() -> str:
    """Hash: squad id -> unit."""
    return f"{PREFIX}:index:squad_unit"


def units() -> str:
    """Hash: unit code -> JSON of units added through the API."""
    return f"{PREFIX}:units"


def hub_channel(hub_id: str) -> str:
    """Pub/sub channel of one hub process: pushes for squads connected to it."""
    return f"{PREFIX}:hub:{hub_id}"


def hubs() -> str:
    """Sorted set: hub process id -> last time it said it was alive (epoch s)."""
    return f"{PREFIX}:hubs"


def hub_squads(hub_id: str) -> str:
    """Set: "unit/squad" of every squad connected to that hub process."""
    return f"{PREFIX}:hub:{hub_id}:squads"


def center_channel() -> str:
    """Pub/sub channel of the supervision center's live feed."""
    return f"{PREFIX}:center"


def push_subscriptions() -> str:
    """Hash: squad id -> JSON of its phone's Web Push subscription (server.webpush)."""
    return f"{PREFIX}:{{push}}:subs"


def push_version() -> str:
    """String: a counter bumped with every change of :func:`push_subscriptions` (same hash
    tag: both change in one transaction); each process reloads its copy when it moves."""
    return f"{PREFIX}:{{push}}:version"


NO_UNIT = "-"  # the unit tag of requests that left the linkage flow


# --- supervision notices (per unit, see server.notices) -------------------------------------


def notices(unit: str, request_id: str) -> str:
    """Hash: notice id -> the notice as JSON (open and closed), of one request."""
    return f"{_u(unit)}:rq:{request_id}:ntc"


def request_open_notices(unit: str, request_id: str) -> str:
    """Set: ids of the request's open notices (closed by the commit that meets them)."""
    return f"{_u(unit)}:rq:{request_id}:ntc:open"


def open_notices(unit: str) -> str:
    """Sorted set: the unit's open notice ids, by time issued (epoch ms)."""
    return f"{_u(unit)}:ntc:open"


def closed_notices(unit: str) -> str:
    """Sorted set: the unit's closed notice ids, by time closed (epoch ms)."""
    return f"{_u(unit)}:ntc:closed"
