"""Operations: metrics, liveness and readiness, JSON logs, and a restart that loses nothing
(a draining hub tells its phones to reconnect elsewhere, spread out, and hands its timers
on)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from dispatch_field import protocol
from dispatch_field.client import FieldClient
from dispatch_field.codes import SERVICE_RESTART
from server.metrics import Metrics, frame_type
from server.store import keys, timers
from server.store.embedded import EmbeddedRedis
from server.store.scripts import Scripts
from server.store.text import text
from tests.conftest import Apps, Hubs, redis_client
from tests.helpers import XIGONG, Api, auth, eventually, online_squad

SERIES = {
    "dispatch_connections",
    "dispatch_frames_in",
    "dispatch_frames_out",
    "dispatch_positions_written",
    "dispatch_intake_to_offer_seconds",
    "dispatch_offers_passed_on",
    "dispatch_notices_issued",
    "dispatch_outbox_frames",
    "dispatch_ledger_lag_seconds",
    "dispatch_redis_round_trip_seconds",
    "dispatch_redis_round_trips",
    "dispatch_timer_lateness_seconds",
    "dispatch_event_loop_lag_seconds",
}


def _families(text: str) -> dict[str, dict[str, float]]:
    """Family name -> {sample name with labels: value}."""
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        samples = found.setdefault(family.name, {})
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return found


# ---- pure ---------------------------------------------------------------------------------


def test_frame_type_reads_the_tag_of_every_hub_frame() -> None:
    frames = [
        protocol.Ok(id="c1"),
        protocol.Error(code="invalid", message="no"),
        protocol.Welcome(squad="s", last_seq=0, server_time=1.0),
    ]
    assert [frame_type(protocol.encode(f)) for f in frames] == ["ok", "error", "welcome"]
    assert frame_type(protocol.stamp_seq(protocol.encode(frames[0]), 7)) == "ok"
    assert frame_type(b"\x81\xa1x\xa1y") == "other"


def test_every_series_is_exposed_even_before_anything_happened() -> None:
    from prometheus_client import generate_latest

    names = set(_families(generate_latest(Metrics().registry).decode()))
    assert names >= SERIES, SERIES - names


# ---- the app ------------------------------------------------------------------------------


async def test_metrics_need_an_admin_and_liveness_and_readiness_need_nobody(
    app: httpx.AsyncClient,
) -> None:
    assert (await app.get("/metrics")).status_code == 401
    assert (await app.get("/metrics", headers=auth("calltaker"))).status_code == 403
    answer = await app.get("/metrics", headers=auth("admin"))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert set(_families(answer.text)) >= SERIES
    assert (await app.get("/livez")).json() == {"status": "alive"}
    ready = await app.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


# ---- Redis: timers handed on --------------------------------------------------------------


async def test_timers_claimed_and_not_finished_are_handed_on_at_once(redis: Redis) -> None:
    scripts = Scripts.register(redis)
    now_ms = int(time.time() * 1000)
    key = keys.timers("water")
    await redis.zadd(key, {b"offer:a1": now_ms - 500, b"offer:a2": now_ms - 100})
    reply = await scripts.due(keys=[key], args=[now_ms, 60_000, 10])
    due = timers.claimed(reply)
    assert sorted(due) == [(b"offer:a1", now_ms - 500), (b"offer:a2", now_ms - 100)]
    leased = dict(await redis.zrange(key, 0, -1, withscores=True))
    assert all(score >= now_ms + 60_000 for score in leased.values())  # leased a minute
    held = timers.Held()
    held.claimed("water", due)
    await redis.zrem(key, b"offer:a2")  # a2 was carried out and removed
    held.finished("water", [b"offer:a2"])
    assert await held.hand_on(redis) == 1
    # a1 is due again at its own time, for any process; a2 stays gone
    assert await redis.zrange(key, 0, -1, withscores=True) == [(b"offer:a1", now_ms - 500)]


async def test_a_draining_process_claims_no_timer_and_leaves_them_to_the_others(
    apps: Apps, app_redis: Redis
) -> None:
    await apps.start(timer_poll_ms=20)
    parts = apps.started[0].app.state.components
    parts.readiness.draining = True  # what the drain sets first
    key, member = keys.timers("water"), timers.entry(timers.TimerKind.OFFLINE, "S-nobody")
    due_ms = int(time.time() * 1000) - 100
    await app_redis.zadd(key, {member: due_ms})
    await asyncio.sleep(0.3)  # fifteen polls
    assert await app_redis.zscore(key, member) == due_ms  # unclaimed: a claim leases it
    parts.readiness.draining = False  # (as another process would) it fires

    async def fired() -> bool:
        return await app_redis.zscore(key, member) is None

    await eventually(fired)


async def test_a_draining_process_takes_none_of_its_moving_squads_offline_until_it_ends(
    apps: Apps, app_redis: Redis
) -> None:
    await apps.start()
    parts = apps.started[0].app.state.components
    hub = parts.hub.id
    # A squad this process held, closed by the drain and not yet back on another process.
    await app_redis.hset(
        keys.squad("water", "S-moving"), mapping={"online": "1", "hub": hub, "conn": "c1"}
    )
    await app_redis.sadd(keys.hub_squads(hub), "water/S-moving")
    parts.presence.handing_over = True  # what the drain sets before it closes its phones
    assert await parts.presence.reconcile() == 0  # the periodic one: it is moving, not gone
    assert await app_redis.hget(keys.squad("water", "S-moving"), "online") == b"1"
    assert await app_redis.zcard(keys.timers("water")) == 0  # no offline timer started
    # The shutdown's: whoever is not back elsewhere by then is recorded offline.
    assert await parts.presence.reconcile(everyone=True) == 1
    assert await app_redis.hget(keys.squad("water", "S-moving"), "online") == b"0"


async def test_reconcile_takes_offline_only_connections_that_are_gone(
    apps: Apps, app_redis: Redis
) -> None:
    """This process's list names each connection: one whose hello is under way (listed, not
    yet registered) is left alone; one replaced by a newer connection is dropped from the
    list without taking the squad offline; one that is gone is taken offline."""
    await apps.start()
    parts = apps.started[0].app.state.components
    hub = parts.hub
    squad_key = keys.squad("water", "S-join")
    await app_redis.hset(squad_key, mapping={"online": "1", "hub": hub.id, "conn": "c-new"})
    listed = keys.hub_squads(hub.id)
    await app_redis.sadd(listed, "water/S-join/c-old", "water/S-join/c-new")
    joining = SimpleNamespace(unit="water", squad="S-join", conn_id="c-new")
    hub.expect(joining)  # type: ignore[arg-type]
    # c-old is gone (c-new took over): dropped from the list, the squad stays online.
    assert await parts.presence.reconcile() == 0
    assert await app_redis.smembers(listed) == {b"water/S-join/c-new"}
    assert await app_redis.hget(squad_key, "online") == b"1"
    # The hello on c-new ended without a session (the process lost it): offline now.
    hub.unexpect(joining)  # type: ignore[arg-type]
    assert await parts.presence.reconcile() == 1
    assert await app_redis.hget(squad_key, "online") == b"0"
    assert await app_redis.exists(listed) == 0
    assert await app_redis.zscore(keys.timers("water"), "offline:S-join") is not None


# ---- hub processes ------------------------------------------------------------------------


async def test_metrics_move_under_load_and_on_their_own_port(hubs: Hubs) -> None:
    port = _free_port()
    hub = hubs.start(metrics_port=port, metrics_sample_s=0.2)
    api = Api(hub)
    squad = await online_squad(api, hub, *XIGONG)
    try:
        for _ in range(3):
            made = await api.request(*XIGONG)
            offer = await squad.next_frame(protocol.Offer)
            assert offer.request.id == made["id"]
            await squad.accept(offer.assignment)
            await squad.enroute(offer.assignment)
            await squad.arrive(offer.assignment)
            await squad.resolve(offer.assignment, "fixed")

        async def scraped() -> dict[str, dict[str, float]]:
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            found = _families(text)
            rtt = found["dispatch_redis_round_trip_seconds"]
            return found if rtt.get("dispatch_redis_round_trip_seconds_count{}", 0) else {}

        found = await eventually(scraped)
        assert found["dispatch_connections"]["dispatch_connections{}"] == 1
        latency = found["dispatch_intake_to_offer_seconds"]
        assert latency["dispatch_intake_to_offer_seconds_count{}"] == 3
        frames_in = found["dispatch_frames_in"]
        assert frames_in["dispatch_frames_in_total{type=accept}"] == 3
        assert frames_in["dispatch_frames_in_total{type=pos}"] >= 1
        assert found["dispatch_frames_out"]["dispatch_frames_out_total{type=offer}"] == 3
        assert found["dispatch_positions_written"]["dispatch_positions_written_total{}"] >= 1
        assert found["dispatch_redis_round_trips"]["dispatch_redis_round_trips_total{}"] > 10
    finally:
        await squad.close()
        await api.close()


async def test_a_draining_hub_sends_its_phones_elsewhere_spread_out_and_loses_nothing(
    hubs: Hubs,
) -> None:
    leaving = hubs.start(drain_wait_s=0.5, drain_spread_s=2.0)
    staying = hubs.start()
    api = Api(staying)
    phones: list[FieldClient] = []
    closed_at: dict[str, float] = {}
    try:
        for i in range(12):
            created = await api.squad("water", f"squad-{i}")
            phone = FieldClient([leaving.ws, staying.ws], created["id"], created["token"])
            await phone.start()
            await phone.duty(True)
            await phone.pos(XIGONG[0] + i * 0.0005, XIGONG[1])
            phones.append(phone)
        await eventually(lambda: _all_available(api, phones))
        made = await api.request(*XIGONG)
        offered = next(p for p in phones if (made.get("squad") == p.squad))

        async with httpx.AsyncClient(base_url=leaving.http) as http:
            assert (await http.get("/readyz")).status_code == 200
            leaving.process.terminate()

            async def draining() -> bool:
                return (await http.get("/readyz")).json() == {"status": "draining"}

            await eventually(draining, timeout_s=5, interval_s=0.05)

        async def all_told() -> bool:
            for phone in phones:
                if phone.close_codes and phone.squad not in closed_at:
                    closed_at[phone.squad] = time.monotonic()
            return len(closed_at) == len(phones)

        await eventually(all_told, timeout_s=15, interval_s=0.01)
        assert {p.close_codes[0] for p in phones} == {SERVICE_RESTART}
        spread = max(closed_at.values()) - min(closed_at.values())
        assert spread >= 1.0, f"all told within {spread:.2f}s: not spread out"
        # uvicorn ends a SIGTERM'd server by raising the signal again, once shut down
        assert (await asyncio.to_thread(leaving.process.wait, 15)) in (0, -signal.SIGTERM)
        assert leaving.log_path is not None
        assert "draining" in leaving.log_path.read_text()
        await eventually(lambda: _all_online(api, phones), timeout_s=15)
        # Told to move, a phone is not recorded offline for its move (it stays in dispatch,
        # and the draining hub spends no Redis call on it): only one not back elsewhere when
        # the process finishes is, which only the last ones told can be.
        redis = redis_client(hubs.redis_url)
        try:
            pending = {text(m) for m in await redis.zrange(keys.timers("water"), 0, -1)}
        finally:
            await redis.aclose()
        recorded_offline = {f"offline:{p.squad}" for p in phones} & pending
        assert len(recorded_offline) <= 3, recorded_offline
        # The offer made before the restart reaches its phone (replayed on the other hub),
        # and the steps taken after it are kept.
        offer = await offered.next_frame(protocol.Offer, timeout_s=10)
        assert offer.request.id == made["id"]
        await offered.accept(offer.assignment)
        assert (await api.get_request(made["id"]))["state"] == "accepted"
    finally:
        for phone in phones:
            await phone.close()
        await api.close()


async def test_a_draining_hubs_phones_step_aside_and_are_candidates_again_on_their_hello(
    hubs: Hubs,
) -> None:
    # Two slices 2 s apart: the near squad is told first, the idle one 2 s later, so the
    # draining hub is still up while the near squad is between hubs.
    leaving = hubs.start(drain_wait_s=0.2, drain_spread_s=4.0)
    staying = hubs.start()
    api = Api(staying)
    phones: list[FieldClient] = []
    try:
        near = await online_squad(api, leaving, *XIGONG, name="near")
        phones.append(near)
        idle = await api.squad("water", "idle")  # second session of the draining hub
        phones.append(FieldClient(leaving.ws, idle["id"], idle["token"], reconnect=False))
        await phones[-1].start()
        far = await online_squad(api, staying, XIGONG[0], XIGONG[1] + 0.01, name="far")
        phones.append(far)
        leaving.process.terminate()
        await eventually(lambda: _async(near.close_codes == [SERVICE_RESTART]), timeout_s=10)
        assert not phones[1].close_codes, "both slices closed at once: no window to test"
        # Between hubs: still online and on duty (not recorded offline for its move), but a
        # new request goes to the squad on the remaining hub, not to the one about to move.
        moving = await api.get_squad(near.squad)
        assert moving["online"] and moving["on_duty"]
        first = await api.request(*XIGONG)
        assert first.get("squad") == far.squad
        # Its hello on the other hub: a candidate again (the far squad is busy now).
        back = FieldClient(staying.ws, near.squad, near.token, reconnect=False)
        phones.append(back)
        await back.start()
        second = await api.request(*XIGONG)
        assert second.get("squad") == near.squad
        offer = await back.next_frame(protocol.Offer, timeout_s=10)
        assert offer.request.id == second["id"]
        assert (await asyncio.to_thread(leaving.process.wait, 15)) in (0, -signal.SIGTERM)
    finally:
        for phone in phones:
            await phone.close()
        await api.close()


async def _async(value: bool) -> bool:
    return value


async def test_json_logs_are_one_object_a_line(hubs: Hubs, tmp_path: Path) -> None:
    hub = hubs.start(log_format="json")
    api = Api(hub)
    try:
        await api.request(*XIGONG)
    finally:
        await api.close()
    hub.stop()
    assert hub.log_path is not None
    lines = [line for line in hub.log_path.read_text().splitlines() if line.strip()]
    assert lines, "the hub logged nothing"
    for line in lines:
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(record), record


async def _all_available(api: Api, phones: list[FieldClient]) -> bool:
    for phone in phones:
        squad = await api.get_squad(phone.squad)
        if not (squad["online"] and squad["on_duty"] and squad["position"]):
            return False
    return True


async def _all_online(api: Api, phones: list[FieldClient]) -> bool:
    return all([(await api.get_squad(p.squad))["online"] for p in phones])


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.system
async def test_not_ready_while_redis_is_stopped_and_ready_again_after(tmp_path: Path) -> None:
    redis_dir = tmp_path / "redis"
    redis = EmbeddedRedis(redis_dir).start()  # its own Redis: this test stops it
    hubs = Hubs(redis.url, tmp_path)
    try:
        hub = hubs.start()
        async with httpx.AsyncClient(base_url=hub.http, timeout=10) as http:
            assert (await http.get("/readyz")).json() == {"status": "ready"}
            await asyncio.to_thread(redis.stop)

            async def unready() -> bool:
                answer = await http.get("/readyz")
                return answer.status_code == 503 and answer.json()["status"] == "redis_unreachable"

            await eventually(unready, timeout_s=15, interval_s=0.2)
            assert (await http.get("/livez")).status_code == 200  # alive: do not restart it
            # The health check says "degraded" at once, not after the client's retries (2.3 s)
            health = await http.get("/api/v1/health", timeout=1.8)
            assert (health.status_code, health.json()) == (503, {"status": "degraded"})
            redis = await asyncio.to_thread(EmbeddedRedis(redis_dir, port=redis.port).start)

            async def ready() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await eventually(ready, timeout_s=15, interval_s=0.2)
    finally:
        for hub in hubs.started:
            hub.stop()
        redis.stop()


@pytest.mark.system
@pytest.mark.parametrize("outage", ["stopped", "frozen"])
async def test_a_hub_stopped_while_redis_is_down_sends_its_phones_away_and_ends(
    tmp_path: Path, outage: str
) -> None:
    """A restart during a Redis outage: the drain cannot step the squads aside (Redis is
    gone: stopped, so connections are refused, or frozen, so nothing answers), but the phones
    must still be told to move within the spread, and the process must end; the log says once
    that Redis is unreachable and never that it is back."""
    redis = EmbeddedRedis(tmp_path / "redis").start()  # its own Redis: this test stops it
    hubs = Hubs(redis.url, tmp_path)
    phones: list[FieldClient] = []
    try:
        hub = hubs.start(drain_wait_s=1.0, drain_spread_s=2.0)
        api = Api(hub)
        try:
            for i in range(50):  # more phones than the spread's slices (40)
                created = await api.squad("water", f"squad-{i}")
                phone = FieldClient([hub.ws], created["id"], created["token"])
                await phone.start()
                phones.append(phone)
        finally:
            await api.close()
        async with httpx.AsyncClient(base_url=hub.http, timeout=10) as http:
            if outage == "stopped":
                await asyncio.to_thread(redis.stop)
            else:
                assert redis.process is not None
                redis.process.send_signal(signal.SIGSTOP)

            async def unready() -> bool:
                return (await http.get("/readyz")).status_code == 503

            await eventually(unready, timeout_s=15, interval_s=0.2)
        hub.process.terminate()
        # Before the fix each slice's step aside spent the client's retries (about 2.3 s)
        # on a refused connection: 40 slices, 90 s before the last phone heard.
        await eventually(
            lambda: _async(all(p.close_codes for p in phones)), timeout_s=10, interval_s=0.05
        )
        assert {p.close_codes[0] for p in phones} == {SERVICE_RESTART}
        assert (await asyncio.to_thread(hub.process.wait, 20)) in (0, -signal.SIGTERM)
        assert hub.log_path is not None
        log = hub.log_path.read_text()
        assert "draining" in log
        assert log.count("Redis unreachable") == 1, log
        assert "reachable again" not in log, log
    finally:
        for phone in phones:
            await phone.close()
        for started in hubs.started:
            started.stop()
        if redis.process is not None and redis.process.poll() is None:
            redis.process.send_signal(signal.SIGCONT)
        redis.stop()
