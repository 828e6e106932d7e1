"""Web Push to squads' phones (server/webpush/): the subscription's checks, what a push says,
the VAPID key, the squads' subscription API, and delivery to a real local push service whose
received message is decrypted with the phone's keys."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from py_vapid import Vapid02

from dispatch_field import protocol
from server.accounts.asgi import PageGate
from server.webpush import vapid
from server.webpush.message import payload
from server.webpush.subscriptions import BadSubscription, Subscription, allowed_hosts, check
from tests.conftest import Apps, auth
from tests.helpers import XIGONG, Api, eventually, online_squad
from tests.pushservice import PhoneKeys, PushService

HOSTS = allowed_hosts("fcm.googleapis.com,*.notify.windows.com,127.0.0.1")


def _subscription(endpoint: str, keys: PhoneKeys | None = None) -> Subscription:
    return msgspec.convert((keys or PhoneKeys()).subscription(endpoint), Subscription)


def basic(squad: str, token: str) -> dict[str, str]:
    pair = base64.b64encode(f"{squad}:{token}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


# ---- pure ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://fcm.googleapis.com/fcm/send/abc",
        "https://db5p.notify.windows.com/w/?token=x",
        "http://127.0.0.1:8123/push/1",
    ],
)
def test_an_endpoint_on_an_allowed_push_service_passes(endpoint: str) -> None:
    check(_subscription(endpoint), HOSTS)


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("https://evil.example/push", "not an allowed push service"),
        ("https://fcm.googleapis.com.evil.example/x", "not an allowed push service"),
        ("https://notify.windows.com.evil/x", "not an allowed push service"),
        ("http://fcm.googleapis.com/fcm/send/abc", "https"),
        ("https://user:pw@fcm.googleapis.com/x", "credentials"),
        ("ftp://fcm.googleapis.com/x", "https"),
        ("https://fcm.googleapis.com:6379/x", "https port"),
        ("https://fcm.googleapis.com:99999/x", "port number"),
    ],
)
def test_an_endpoint_elsewhere_is_refused_naming_it(endpoint: str, reason: str) -> None:
    with pytest.raises(BadSubscription, match=reason) as refused:
        check(_subscription(endpoint), HOSTS)
    assert refused.value.field == "endpoint"


def test_the_https_port_may_be_written_and_a_loopback_service_may_have_its_own() -> None:
    check(_subscription("https://fcm.googleapis.com:443/fcm/send/abc"), HOSTS)
    check(_subscription("http://127.0.0.1:8443/push"), HOSTS)  # a test push service


def test_plain_http_is_only_for_a_loopback_host() -> None:
    with pytest.raises(BadSubscription, match="https"):
        check(_subscription("http://push.local/x"), allowed_hosts("push.local"))


def test_keys_of_the_wrong_size_are_refused_naming_the_key() -> None:
    good = PhoneKeys().subscription("https://fcm.googleapis.com/x")
    short = {**good, "keys": {**good["keys"], "auth": "AAAA"}}
    with pytest.raises(BadSubscription) as refused:
        check(msgspec.convert(short, Subscription), HOSTS)
    assert refused.value.field == "keys.auth"
    compressed = {**good, "keys": {**good["keys"], "p256dh": "Ag" + "A" * 85}}
    with pytest.raises(BadSubscription) as refused:
        check(msgspec.convert(compressed, Subscription), HOSTS)
    assert refused.value.field == "keys.p256dh"


def _offer(respond_by: float) -> bytes:
    request = protocol.RequestInfo(
        id="20261130-000042",
        category="water_main_burst",
        description="Burst pipe",
        lat=34.67,
        lon=112.445,
        address="Zhongzhou Road 12",
        caller_phone="13800138000",
    )
    return protocol.encode(
        protocol.Offer(assignment="A3f9c1d7e20b4", request=request, respond_by=respond_by)
    )


def test_an_offer_wakes_the_phone_with_only_what_the_notification_shows() -> None:
    push = payload(_offer(respond_by=1_000_300.0), now=1_000_000.0)
    assert push is not None
    assert push.data == {
        "t": "offer",
        "assignment": "A3f9c1d7e20b4",
        "request": "20261130-000042",
        "category": "water_main_burst",
        "address": "Zhongzhou Road 12",
        "respond_by": 1_000_300.0,
    }
    assert "13800138000" not in json.dumps(push.data)  # the caller's number stays on the socket
    assert push.ttl_s == 300  # useless once the offer window has passed
    assert push.topic == "A3f9c1d7e20b4" and push.urgency == "high"


def test_a_notice_wakes_the_phone_and_a_revoke_does_not() -> None:
    notice = protocol.NoticeInfo(
        id="R-arrive-1",
        request="R",
        unit="water",
        kind="arrive",
        level=1,
        issued_at=1.0,
        due_at=1.0,
    )
    push = payload(protocol.encode(protocol.Notice(notice=notice)), now=0.0)
    assert push is not None and push.data == {
        "t": "notice",
        "request": "R",
        "kind": "arrive",
        "level": 1,
    }
    revoke = protocol.encode(protocol.Revoke(assignment="A1", reason="offer_window_passed"))
    assert payload(revoke, now=0.0) is None
    assert payload(b"\xc1not a frame", now=0.0) is None


def test_the_vapid_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = vapid.key_path(None, str(tmp_path / "data"))
    first = vapid.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    again = vapid.load_or_create(path)
    signer_first = vapid.VapidSigner(first, "mailto:ops@example.org")
    assert vapid.VapidSigner(again, "mailto:ops@example.org").public_key == signer_first.public_key
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no scratch file left


def test_a_configured_key_file_is_used(tmp_path: Path) -> None:
    key = Vapid02()
    key.generate_keys()
    (tmp_path / "mine.pem").write_bytes(key.private_pem())
    path = vapid.key_path(str(tmp_path / "mine.pem"), str(tmp_path / "unused"))
    loaded = vapid.load_or_create(path)
    assert loaded.private_pem() == key.private_pem()
    assert not (tmp_path / "unused").exists()


def test_a_key_from_the_environment_wins_and_makes_no_file(tmp_path: Path) -> None:
    private = vapid.new_private_key()
    key = vapid.hub_key(private, None, str(tmp_path / "data"))
    again = vapid.hub_key(private, None, str(tmp_path / "elsewhere"))
    public = [vapid.VapidSigner(k, "mailto:ops@example.org").public_key for k in (key, again)]
    assert public[0] == public[1]
    assert not (tmp_path / "data").exists()  # nothing written: the key is the setting's
    with pytest.raises(ValueError, match="DISPATCH_WEBPUSH_PRIVATE_KEY"):
        vapid.hub_key("not-a-key", None, str(tmp_path))


def test_the_key_command_prints_a_key_the_hub_takes(capsys: pytest.CaptureFixture[str]) -> None:
    from server.webpush.__main__ import main

    main()
    line = capsys.readouterr().out.splitlines()[0]
    name, _, value = line.partition("=")
    assert name == "DISPATCH_WEBPUSH_PRIVATE_KEY"
    vapid.hub_key(value, None, "unused")


def test_the_signed_header_verifies_and_names_the_push_service(tmp_path: Path) -> None:
    signer = vapid.VapidSigner(vapid.load_or_create(tmp_path / "k.pem"), "mailto:ops@example.org")
    header = signer.authorization("https://fcm.googleapis.com/fcm/send/abc", now=1e9)
    assert Vapid02.verify(header)
    claims = _claims(header)
    assert claims["aud"] == "https://fcm.googleapis.com"
    assert claims["sub"] == "mailto:ops@example.org"
    assert header.split("k=")[1] == signer.public_key
    # the same service within the token's life: the same header, no new signature
    assert signer.authorization("https://fcm.googleapis.com/other", now=1e9 + 60) == header


@pytest.mark.parametrize("subject", ["", "ops@example.org", "http://example.org", "mailto:x"])
def test_a_subject_push_services_cannot_use_stops_the_start(tmp_path: Path, subject: str) -> None:
    with pytest.raises(ValueError, match="DISPATCH_WEBPUSH_SUBJECT"):
        vapid.VapidSigner(vapid.load_or_create(tmp_path / "k.pem"), subject)


def _claims(header: str) -> dict[str, Any]:
    token = header.split("t=")[1].split(",")[0]
    body = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return decoded


def test_the_phone_app_is_public_and_nothing_else_becomes_so() -> None:
    from server.accounts import asgi

    assert not asgi._is_page("/phone/") and not asgi._is_page("/phone/index.html")
    assert asgi._is_page("/phone/../wall.html")  # the static files would resolve the dots
    # ... as they would these (decoded: "%2e" arrives as "."): each names a gated page
    for dotted in ("/center.html/.", "/intake.html/./", "/reports/index.html/.", "/phone/./.."):
        assert asgi._is_page(dotted), dotted
    assert asgi._is_page("/wall.html") and asgi._is_page("/phoney.html")
    assert PageGate is asgi.PageGate


# ---- the squads' API (in process) ------------------------------------------------------------


async def _squad(app: httpx.AsyncClient) -> tuple[str, str]:
    response = await app.post(
        "/api/v1/squads", headers=auth("admin"), json={"unit": "water", "name": "Crew 7"}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    return created["id"], created["token"]


async def test_the_phone_pages_load_without_a_session(app: httpx.AsyncClient) -> None:
    for path in ("/phone/", "/phone/index.html", "/phone/manifest.webmanifest", "/phone/sw.js"):
        response = await app.get(path)
        assert response.status_code == 200, (path, response.status_code)
    assert (await app.get("/wall.html")).status_code == 303  # still gated
    assert (await app.get("/phone/../wall.html")).status_code in (303, 404)


async def test_the_profile_names_the_squad_and_the_push_key(app: httpx.AsyncClient) -> None:
    squad, token = await _squad(app)
    response = await app.get("/api/v1/field/me", headers=basic(squad, token))
    assert response.status_code == 200, response.text
    profile = response.json()
    assert profile["squad"] == squad and profile["name"] == "Crew 7"
    assert profile["unit"]["code"] == "water" and profile["unit"]["name_zh"]
    names = {c["code"]: c["name_zh"] for c in profile["categories"]}
    assert names["water_main_burst"] == "供水管道爆裂"
    assert len(base64.urlsafe_b64decode(profile["push_key"] + "=")) == 65


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic"},
        {"Authorization": "Basic !!!"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": "Bearer admin-token-123456"},  # a person's token is not a squad's
    ],
)
async def test_the_field_api_needs_the_squads_credentials(
    app: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await app.get("/api/v1/field/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert "www-authenticate" not in response.headers  # no browser password dialog


async def test_a_wrong_token_is_refused_and_guessing_is_throttled(apps: Apps) -> None:
    app = await apps.start(hello_failures_per_min=3)
    squad, token = await _squad(app)
    for _ in range(3):
        wrong = await app.get("/api/v1/field/me", headers=basic(squad, token + "x"))
        assert wrong.status_code == 401
    throttled = await app.get("/api/v1/field/me", headers=basic(squad, token))
    assert throttled.status_code == 429 and "retry-after" in throttled.headers


async def test_a_subscription_is_recorded_replaced_and_forgotten(apps: Apps) -> None:
    app = await apps.start(webpush_hosts="127.0.0.1,fcm.googleapis.com")
    services = apps.started[0].app.state.components
    squad, token = await _squad(app)
    first = PhoneKeys().subscription("https://fcm.googleapis.com/fcm/send/one")
    put = await app.put("/api/v1/field/push-subscription", headers=basic(squad, token), json=first)
    assert put.status_code == 204, put.text
    assert services.webpush.subscriptions.of(squad).endpoint.endswith("/one")
    second = PhoneKeys().subscription("http://127.0.0.1:9/push/two")
    put = await app.put("/api/v1/field/push-subscription", headers=basic(squad, token), json=second)
    assert put.status_code == 204
    other = apps.started[0].app.state.components.webpush.subscriptions
    assert other.of(squad).endpoint.endswith("/two")
    gone = await app.delete("/api/v1/field/push-subscription", headers=basic(squad, token))
    assert gone.status_code == 204
    assert services.webpush.subscriptions.of(squad) is None


async def test_another_process_learns_a_subscription(apps: Apps) -> None:
    first = await apps.start(webpush_reload_s=0.05)
    await apps.start(webpush_reload_s=0.05)
    squad, token = await _squad(first)
    body = PhoneKeys().subscription("https://fcm.googleapis.com/fcm/send/x")
    put = await first.put("/api/v1/field/push-subscription", headers=basic(squad, token), json=body)
    assert put.status_code == 204
    elsewhere = apps.started[1].app.state.components.webpush.subscriptions

    async def learnt() -> bool:
        return elsewhere.of(squad) is not None

    await eventually(learnt, timeout_s=5)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"endpoint": "https://evil.example/x", "keys": None}, 422, "keys"),
        ("endpoint", 422, ""),
        ({"keys": {"p256dh": "x", "auth": "y"}}, 422, "endpoint"),
        ({"endpoint": "https://evil.example/push"}, 422, "keys"),
        ("bad-sub:evil", 422, "endpoint"),
        ("bad-sub:short-auth", 422, "keys.auth"),
        ("bad-sub:extra", 422, "extra"),
    ],
)
async def test_a_bad_subscription_is_refused_naming_the_field(
    app: httpx.AsyncClient, body: Any, status: int, field: str
) -> None:
    squad, token = await _squad(app)
    good = PhoneKeys().subscription("https://fcm.googleapis.com/fcm/send/x")
    if body == "bad-sub:evil":
        body = {**good, "endpoint": "https://evil.example/push"}
    elif body == "bad-sub:short-auth":
        body = {**good, "keys": {**good["keys"], "auth": "AAAA"}}
    elif body == "bad-sub:extra":
        body = {**good, "extra": 1}
    response = await app.put(
        "/api/v1/field/push-subscription", headers=basic(squad, token), json=body
    )
    assert response.status_code == status, response.text
    if field:
        assert field in response.json()["error"]["fields"], response.json()


async def test_a_body_that_is_not_json_is_a_400(app: httpx.AsyncClient) -> None:
    squad, token = await _squad(app)
    response = await app.put(
        "/api/v1/field/push-subscription",
        headers={**basic(squad, token), "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


# ---- delivery to a real push service ----------------------------------------------------------


async def test_a_pushed_offer_reaches_the_push_service_encrypted_for_the_phone(
    apps: Apps,
) -> None:
    """In process: the hub's push of an offer goes to the squad's push service; the body
    decrypts with the phone's keys, the VAPID header is the hub's; a 410 forgets the
    subscription."""
    app = await apps.start(webpush_hosts="127.0.0.1")
    services = apps.started[0].app.state.components
    squad, token = await _squad(app)
    phone = PhoneKeys()
    with PushService() as service:
        endpoint = service.url("/push/crew-7")
        put = await app.put(
            "/api/v1/field/push-subscription",
            headers=basic(squad, token),
            json=phone.subscription(endpoint),
        )
        assert put.status_code == 204, put.text
        profile = (await app.get("/api/v1/field/me", headers=basic(squad, token))).json()
        respond_by = time.time() + 60
        await services.broker.push("water", squad, 1, _offer(respond_by), "")

        received = await asyncio.to_thread(service.next)
        assert received.path == "/push/crew-7"
        assert received.headers["content-encoding"] == "aes128gcm"
        assert 50 <= int(received.headers["ttl"]) <= 60
        assert received.headers["urgency"] == "high"
        assert received.headers["topic"] == "A3f9c1d7e20b4"
        authorization = received.headers["authorization"]
        assert Vapid02.verify(authorization)
        assert authorization.split("k=")[1] == profile["push_key"]
        assert _claims(authorization)["aud"] == endpoint.rsplit("/push", 1)[0]
        message = phone.decrypt(received.body)
        assert message["t"] == "offer" and message["assignment"] == "A3f9c1d7e20b4"
        assert message["request"] == "20261130-000042"
        assert abs(message["respond_by"] - respond_by) < 1e-3

        # A revoke does not wake the phone; a push service saying "gone" ends the subscription.
        await services.broker.push(
            "water",
            squad,
            2,
            protocol.encode(
                protocol.Revoke(assignment="A3f9c1d7e20b4", reason="offer_window_passed")
            ),
            "",
        )
        service.status = 410
        await services.broker.push("water", squad, 3, _offer(respond_by), "")
        assert (await asyncio.to_thread(service.next)).headers["topic"] == "A3f9c1d7e20b4"

        async def forgotten() -> bool:
            return services.webpush.subscriptions.of(squad) is None

        await eventually(forgotten, timeout_s=5)
        assert service.received.empty()  # the revoke was never pushed
        assert services.webpush.sent == 1 and services.webpush.failed == 1
    metrics = (await app.get("/metrics", headers=auth("admin"))).text
    assert 'dispatch_webpush_total{outcome="sent"} 1.0' in metrics
    assert 'dispatch_webpush_total{outcome="failed"} 1.0' in metrics
    assert "dispatch_webpush_subscriptions 0.0" in metrics  # the gone one was forgotten


async def test_an_offer_to_a_connected_squad_is_also_pushed(hubs: Any) -> None:
    """End to end with a hub process: a request's offer reaches the squad's socket and, as a
    Web Push, the squad's push service; decrypted with the phone's keys it names the same
    assignment."""
    hub = hubs.start(webpush_hosts="127.0.0.1")
    api = Api(hub)
    client = await online_squad(api, hub, *XIGONG, name="Crew 9")
    phone = PhoneKeys()
    with PushService() as service:
        put = await api.http.put(
            "/api/v1/field/push-subscription",
            headers=basic(client.squad, client.token),
            json=phone.subscription(service.url("/push/crew-9")),
        )
        assert put.status_code == 204, put.text
        created = await api.request(*XIGONG)
        offer = await client.next_frame(protocol.Offer)
        received = await asyncio.to_thread(service.next)
        message = phone.decrypt(received.body)
    assert offer.request.id == created["id"]
    assert message["assignment"] == offer.assignment
    assert message["request"] == created["id"]
    assert message["category"] == "water_main_burst"
    await client.close()
    await api.close()
