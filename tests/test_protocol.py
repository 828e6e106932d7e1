"""The field protocol: codecs, validation paths, seq stamping, the schema, close codes."""

from __future__ import annotations

import json
import math

import msgspec
import pytest

from dispatch_field import codes, protocol
from dispatch_field.codes import CloseCode

PHONE_FRAMES: list[protocol.PhoneFrame] = [
    protocol.Hello(squad="laocheng-1", token="tok-abcdefgh"),
    protocol.Hello(squad="laocheng-1", token="tok-abcdefgh", last_seq=42),
    protocol.Pos(lat=34.6197, lon=112.4540, ts=1_767_225_600.5),
    protocol.Pos(lat=-protocol.MAX_LAT, lon=180.0, ts=0.0, acc=12.5),
    protocol.Duty(on=True),
    protocol.Duty(on=False),
    protocol.Ack(seq=7),
    protocol.Accept(assignment="a1", id="c1"),
    protocol.Accept(assignment="a1", id="c1", at=1_767_225_601.0),
    protocol.Enroute(assignment="a1", id="c2"),
    protocol.Arrive(assignment="a1", id="c3", at=1_767_225_700.0),
    protocol.Resolve(assignment="a1", id="c4", note="replaced the manhole cover"),
    protocol.Resolve(assignment="a1", id="c4b"),
    protocol.Defer(assignment="a1", id="c5", until=1_767_312_000.0, reason="needs a part"),
    protocol.Dispute(assignment="a1", id="c6", reason="not our district", at=1.0),
]


def _ids(frames: list[protocol.PhoneFrame]) -> list[str]:
    return [f"{type(f).__name__}-{i}" for i, f in enumerate(frames)]


def test_every_phone_frame_type_is_covered() -> None:
    assert {type(f) for f in PHONE_FRAMES} == set(protocol.PhoneFrame.__args__)


@pytest.mark.parametrize("frame", PHONE_FRAMES, ids=_ids(PHONE_FRAMES))
def test_phone_frame_round_trips_through_msgpack(frame: protocol.PhoneFrame) -> None:
    data = protocol.encode(frame)
    assert isinstance(data, bytes)
    decoded = protocol.decode_phone(data)
    assert type(decoded) is type(frame)
    assert decoded == frame


@pytest.mark.parametrize("frame", PHONE_FRAMES, ids=_ids(PHONE_FRAMES))
def test_phone_frame_round_trips_through_json(frame: protocol.PhoneFrame) -> None:
    text = protocol.encode_json(frame)
    assert isinstance(text, str)
    assert json.loads(text)["t"] == type(frame).__struct_config__.tag
    decoded = protocol.decode_phone(text)
    assert type(decoded) is type(frame)
    assert decoded == frame


@pytest.mark.parametrize("frame", PHONE_FRAMES, ids=_ids(PHONE_FRAMES))
def test_msgpack_to_json_matches_the_json_codec(frame: protocol.PhoneFrame) -> None:
    text = protocol.msgpack_to_json(protocol.encode(frame))
    assert json.loads(text) == json.loads(protocol.encode_json(frame))
    assert protocol.decode_phone(text) == frame


def test_defaults_are_omitted_on_the_wire() -> None:
    assert json.loads(protocol.encode_json(protocol.Hello(squad="s", token="t"))) == {
        "t": "hello",
        "squad": "s",
        "token": "t",
    }


# ---- validation ----------------------------------------------------------------------------

POS = {"t": "pos", "lat": 34.6, "lon": 112.4, "ts": 1.0}


def _both_codecs(obj: object) -> list[bytes | str]:
    return [msgspec.msgpack.encode(obj), json.dumps(obj)]


def _decode_error(obj: object) -> list[str]:
    messages = []
    for data in _both_codecs(obj):
        with pytest.raises(msgspec.ValidationError) as info:
            protocol.decode_phone(data)
        messages.append(str(info.value))
    return messages


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("lat", 90.0001, "$.lat"),
        ("lat", -200.0, "$.lat"),
        ("lat", 89.0, "$.lat"),  # valid on Earth, outside what Redis GEO can store
        ("lat", -85.06, "$.lat"),
        ("ts", 1e300, "$.ts"),
        ("ts", 253402300799.0, "$.ts"),  # year 9999
        ("lon", 180.5, "$.lon"),
        ("lon", -181.0, "$.lon"),
        ("ts", -1.0, "$.ts"),
        ("acc", -0.5, "$.acc"),
        ("acc", 1e300, "$.acc"),
    ],
)
def test_out_of_range_names_the_path(field: str, value: float, path: str) -> None:
    for message in _decode_error({**POS, field: value}):
        assert message.endswith(f"at `{path}`"), message


def test_infinite_accuracy_is_refused() -> None:
    """MessagePack carries infinity and NaN (JSON cannot): neither passes as an accuracy."""
    for value in (math.inf, math.nan):
        data = msgspec.msgpack.encode({**POS, "acc": value})
        with pytest.raises(msgspec.ValidationError, match=r"at `\$\.acc`"):
            protocol.decode_phone(data)


def test_wrong_type_names_the_path() -> None:
    for message in _decode_error({**POS, "lat": "north"}):
        assert "Expected `float`, got `str`" in message and "`$.lat`" in message
    for message in _decode_error({"t": "duty", "on": "yes"}):
        assert "`$.on`" in message


def test_missing_required_field_is_named() -> None:
    frame = {k: v for k, v in POS.items() if k != "lat"}
    for message in _decode_error(frame):
        assert "missing required field `lat`" in message


def test_unknown_field_is_refused() -> None:
    for message in _decode_error({**POS, "speed": 3.0}):
        assert "unknown field `speed`" in message


def test_hub_only_field_is_unknown_on_a_phone_frame() -> None:
    for message in _decode_error({"t": "ack", "seq": 1, "squad": "s"}):
        assert "unknown field `squad`" in message


@pytest.mark.parametrize("t", ["teleport", "offer", "welcome", ""])
def test_unknown_type_names_t(t: str) -> None:
    # Hub frame types are not phone frames either.
    for message in _decode_error({"t": t}):
        assert "`$.t`" in message and "Invalid value" in message


def test_missing_t_is_refused() -> None:
    for message in _decode_error({"lat": 1.0}):
        assert "missing required field `t`" in message


@pytest.mark.parametrize("obj", [[1, 2], "pos", 5, None])
def test_non_map_frame_is_refused(obj: object) -> None:
    for message in _decode_error(obj):
        assert "Expected `object`" in message


@pytest.mark.parametrize(
    "data",
    [b"\xc1", b"", b"\x85\xa1t", b"\x81\xa1", "{not json}", '{"t": ', "\x00garbage"],
)
def test_garbage_is_a_decode_error(data: bytes | str) -> None:
    with pytest.raises(msgspec.DecodeError) as info:
        protocol.decode_phone(data)
    assert not isinstance(info.value, msgspec.ValidationError)
    assert protocol.DecodeError is msgspec.DecodeError


@pytest.mark.parametrize(
    "frame",
    [
        {"t": "hello", "squad": "", "token": "t"},
        {"t": "hello", "squad": "x" * 65, "token": "t"},
        {"t": "ack", "seq": -1},
        {"t": "dispute", "assignment": "a", "id": "c", "reason": ""},
        {"t": "resolve", "assignment": "a", "id": "c", "note": "n" * 2001},
        # a reason is words: not blank (a caller's message once ended in ": "), no NUL
        {"t": "dispute", "assignment": "a", "id": "c", "reason": " "},
        {"t": "defer", "assignment": "a", "id": "c", "until": 2e9, "reason": "\t\n "},
        {"t": "dispute", "assignment": "a", "id": "c", "reason": "\x00"},
        {"t": "dispute", "assignment": "a", "id": "c", "reason": "not ours\x00"},
        {"t": "resolve", "assignment": "a", "id": "c", "note": "fixed\x00"},
    ],
)
def test_length_and_sign_constraints(frame: dict[str, object]) -> None:
    _decode_error(frame)


@pytest.mark.parametrize("reason", ["x", " 燃气泄漏，不归供水公司 ", "line one\nline two"])
def test_a_reason_in_words_passes(reason: str) -> None:
    frame = {"t": "dispute", "assignment": "a", "id": "c", "reason": reason}
    decoded = protocol.decode_phone(json.dumps(frame))
    assert isinstance(decoded, protocol.Dispute) and decoded.reason == reason


# ---- seq stamping ----------------------------------------------------------------------------

REQUEST = protocol.RequestInfo(
    id="r-1", category="street_lamp", description="lamp out", lat=34.62, lon=112.45
)
NUMBERED_BODIES = [
    protocol.Offer(assignment="a1", request=REQUEST, respond_by=1_767_225_660.0),
    protocol.Offer(
        assignment="a2",
        request=protocol.RequestInfo(
            id="r-2", category="c", description="d", lat=0.0, lon=0.0, address="1 Main St"
        ),
        respond_by=5.0,
    ),
    protocol.Revoke(assignment="a1", reason="offer_window_passed"),
]


@pytest.mark.parametrize("body_frame", NUMBERED_BODIES, ids=["offer", "offer-addr", "revoke"])
@pytest.mark.parametrize("seq", [1, 127, 128, 65535, 2**32, 2**40])
def test_stamp_seq_decodes_with_that_seq(body_frame: protocol.HubFrame, seq: int) -> None:
    body = protocol.encode(body_frame)
    assert b"seq" not in body  # seq=0 is omitted from the stored body
    wire = protocol.stamp_seq(body, seq)
    decoded = protocol.decode_hub(wire)
    assert type(decoded) is type(body_frame)
    assert decoded.seq == seq
    assert decoded == msgspec.structs.replace(body_frame, seq=seq)
    # Same bytes the encoder itself would produce for the numbered frame, up to key order.
    assert msgspec.msgpack.decode(wire) == msgspec.msgpack.decode(
        protocol.encode(msgspec.structs.replace(body_frame, seq=seq))
    )
    # And it converts to JSON that the JSON hub decoder accepts.
    assert protocol.decode_hub(protocol.msgpack_to_json(wire)) == decoded


def test_stamp_seq_rejects_a_non_fixmap_body() -> None:
    with pytest.raises(ValueError, match="fixmap"):
        protocol.stamp_seq(msgspec.msgpack.encode([1, 2, 3]), 1)
    with pytest.raises(ValueError, match="fixmap"):
        protocol.stamp_seq(msgspec.msgpack.encode("offer"), 1)
    fifteen = msgspec.msgpack.encode({f"k{i}": i for i in range(15)})
    assert fifteen[0] == 0x8F
    with pytest.raises(ValueError, match="fixmap"):
        protocol.stamp_seq(fifteen, 1)
    sixteen = msgspec.msgpack.encode({f"k{i}": i for i in range(16)})
    assert sixteen[0] == 0xDE  # map16
    with pytest.raises(ValueError, match="fixmap"):
        protocol.stamp_seq(sixteen, 1)


def test_stamp_seq_accepts_fourteen_keys() -> None:
    body = msgspec.msgpack.encode({f"k{i}": i for i in range(14)})
    stamped = msgspec.msgpack.decode(protocol.stamp_seq(body, 9))
    assert len(stamped) == 15 and stamped["seq"] == 9 and stamped["k13"] == 13


def test_msgpack_to_json_round_trip_of_hub_frames() -> None:
    frames: list[protocol.HubFrame] = [
        protocol.Welcome(squad="s", last_seq=3, server_time=1.5),
        protocol.Offer(assignment="a1", request=REQUEST, respond_by=9.0, seq=4),
        protocol.Revoke(assignment="a1", reason="moved", seq=5),
        protocol.Ok(id="c1"),
        protocol.Error(code=codes.ErrorCode.INVALID, message="bad lat", id="c1"),
        protocol.Error(code=codes.ErrorCode.MALFORMED, message="bad"),
    ]
    for frame in frames:
        text = protocol.msgpack_to_json(protocol.encode(frame))
        assert protocol.decode_hub(text) == frame
        assert protocol.decode_hub(protocol.encode(frame)) == frame


# ---- the published schema --------------------------------------------------------------------


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_published_schema_shape_and_refs_resolve() -> None:
    doc = protocol.published_schema()
    json.dumps(doc)  # plain JSON
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    defs = doc["$defs"]
    refs = _refs(doc)
    assert refs, "expected $ref pointers"
    for ref in refs:
        assert ref.startswith("#/$defs/"), ref
        assert ref.removeprefix("#/$defs/") in defs, ref
    phone_tags = {r.removeprefix("#/$defs/") for r in _refs(doc["phone_to_hub"])}
    assert phone_tags == {cls.__name__ for cls in protocol.PhoneFrame.__args__}
    pos = defs["Pos"]["properties"]
    assert (pos["lat"]["minimum"], pos["lat"]["maximum"]) == (-85.05112878, 85.05112878)
    assert (pos["lon"]["minimum"], pos["lon"]["maximum"]) == (-180.0, 180.0)
    assert defs["Pos"]["additionalProperties"] is False


def test_published_schema_validates_frames() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = protocol.published_schema()
    jsonschema.Draft202012Validator.check_schema(doc)
    phone = jsonschema.Draft202012Validator(
        {"$schema": doc["$schema"], "$defs": doc["$defs"], **doc["phone_to_hub"]}
    )
    good = json.loads(protocol.encode_json(protocol.Pos(lat=34.6, lon=112.4, ts=1.0)))
    phone.validate(good)
    assert not phone.is_valid({**good, "lat": 200})
    assert not phone.is_valid({**good, "extra": 1})
    assert not phone.is_valid({"t": "teleport"})
    for frame in PHONE_FRAMES:
        phone.validate(json.loads(protocol.encode_json(frame)))


# ---- close codes -----------------------------------------------------------------------------


@pytest.mark.parametrize("code", list(CloseCode), ids=[c.name for c in CloseCode])
def test_close_code_bands(code: CloseCode) -> None:
    assert 4000 <= code < 4200
    transient = 4000 <= code < 4100
    assert code.reconnect is transient
    assert codes.should_reconnect(code) is transient
    assert codes.should_reconnect(int(code)) is code.reconnect


def test_both_bands_are_populated() -> None:
    assert any(c.reconnect for c in CloseCode)
    assert any(not c.reconnect for c in CloseCode)


def test_should_reconnect_over_the_whole_private_bands() -> None:
    assert all(codes.should_reconnect(c) for c in range(4000, 4100))
    assert not any(codes.should_reconnect(c) for c in range(4100, 4200))


@pytest.mark.parametrize(("code", "expected"), [(1000, False), (1001, True), (1006, True)])
def test_standard_close_codes(code: int, expected: bool) -> None:
    assert codes.should_reconnect(code) is expected
