"""The published field-protocol documents: up to date with the code, and truthful.

* ``fieldapp-api/schema.json``, ``asyncapi.yaml`` and the generated README sections are what
  ``fieldapp-api/generate.py`` would write now (its check runs in-process).
* ``schema.json`` accepts real frames as the codecs put them on the wire, in both directions
  and both encodings, and refuses broken ones.
* Every frame type of ``PhoneFrame`` / ``HubFrame`` is a message of the AsyncAPI document, on
  the right operation, with a payload that resolves to its schema.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import msgspec
import pytest

from dispatch_field import protocol
from dispatch_field.codes import CloseCode, ErrorCode

ROOT = Path(__file__).resolve().parents[1]
API_DIR = ROOT / "fieldapp-api"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fieldapp_generate", API_DIR / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = _load_generator()

PHONE_TYPES: tuple[type, ...] = protocol.PhoneFrame.__args__  # type: ignore[attr-defined]
HUB_TYPES: tuple[type, ...] = protocol.HubFrame.__args__  # type: ignore[attr-defined]


def _tag(cls: type) -> str:
    return str(cls.__struct_config__.tag)  # type: ignore[attr-defined]


# ---- up to date ---------------------------------------------------------------------------


def test_generated_files_are_up_to_date() -> None:
    problems = generate.stale()
    assert not problems, "\n".join(problems) + "\nrun: python fieldapp-api/generate.py"


def test_check_reports_a_stale_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stale_schema = tmp_path / "schema.json"
    stale_schema.write_text('{"title": "old"}\n', encoding="utf-8")
    monkeypatch.setattr(generate, "SCHEMA_PATH", stale_schema)
    assert generate.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "schema.json is stale" in err and '-{"title": "old"}' in err


def test_documents_are_compared_by_meaning_not_by_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another PyYAML (or JSON indentation) spelling the same document is not stale; a
    changed value is."""
    import yaml

    data = yaml.safe_load(generate.asyncapi_text())
    respelled = tmp_path / "asyncapi.yaml"
    respelled.write_text(yaml.safe_dump(data, width=40, sort_keys=True), encoding="utf-8")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(json.loads(generate.schema_text())), encoding="utf-8")
    monkeypatch.setattr(generate, "ASYNCAPI_PATH", respelled)
    monkeypatch.setattr(generate, "SCHEMA_PATH", schema)
    assert generate.stale() == []
    data["info"]["version"] = "0.0.0-changed"
    respelled.write_text(yaml.safe_dump(data), encoding="utf-8")
    problems = generate.stale()
    assert len(problems) == 1 and "asyncapi.yaml is stale" in problems[0]


def test_readme_sections_cover_every_frame_and_code() -> None:
    readme = (API_DIR / "README.md").read_text(encoding="utf-8")
    for name in generate.SECTIONS:
        assert readme.count(f"<!-- {name}:begin -->") == 1
        assert readme.count(f"<!-- {name}:end -->") == 1
    frames = readme.split("<!-- frames:begin -->")[1].split("<!-- frames:end -->")[0]
    for cls in (*PHONE_TYPES, *HUB_TYPES):
        assert f"#### `{_tag(cls)}`" in frames, cls
        for field in cls.__struct_fields__:  # type: ignore[attr-defined]
            assert f"| `{field}` |" in frames, (cls, field)
    close = readme.split("<!-- close-codes:begin -->")[1].split("<!-- close-codes:end -->")[0]
    for code in CloseCode:
        assert f"| `{int(code)}` | `{code.name}` |" in close
    errors = readme.split("<!-- error-codes:begin -->")[1].split("<!-- error-codes:end -->")[0]
    for error in ErrorCode:
        assert f"| `{error.value}` |" in errors


# ---- schema.json against real frames ------------------------------------------------------


@pytest.fixture(scope="module")
def published() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((API_DIR / "schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


def _validator(doc: dict[str, Any], direction: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        {"$schema": doc["$schema"], "$defs": doc["$defs"], **doc[direction]}
    )


_REQUEST = protocol.RequestInfo(
    id="20261130-000001",
    category="water_main_burst",
    description="水管爆裂",
    lat=34.67,
    lon=112.445,
)
PHONE_SAMPLES: list[Any] = [
    *(f for f in generate.SAMPLES if isinstance(f, PHONE_TYPES)),
    protocol.Hello(squad="S00001", token="t"),
    protocol.Pos(lat=-protocol.MAX_LAT, lon=180.0, ts=0.0),
    protocol.Duty(on=False),
    protocol.Ack(seq=0),
    protocol.Accept(assignment="A1", id="c1"),
    protocol.Resolve(assignment="A1", id="c2", note="x" * 2000),
    protocol.Defer(assignment="A1", id="c3", until=1.0, reason="r"),
    protocol.Dispute(assignment="A1", id="c4", reason="非本单位辖区", at=1.5),
]
HUB_SAMPLES: list[Any] = [
    *(f for f in generate.SAMPLES if isinstance(f, HUB_TYPES)),
    protocol.Welcome(squad="S00001", last_seq=0),
    protocol.Offer(assignment="A1", request=_REQUEST, respond_by=1.0, seq=1),
    protocol.Revoke(assignment="A1", reason="moved_by_center", seq=2),
    protocol.Ok(id="c1"),
    protocol.Error(code=ErrorCode.MALFORMED, message="a frame must be a map"),
]


def _wire_forms(frame: Any) -> list[dict[str, Any]]:
    """The frame as both codecs put it on the wire, decoded as plain maps. Numbered hub frames
    go out as the hub sends them: body without ``seq``, stamped by ``stamp_seq``."""
    if isinstance(frame, protocol.NUMBERED):
        body = protocol.encode(msgspec.structs.replace(frame, seq=0))
        packed = protocol.stamp_seq(body, frame.seq)
    else:
        packed = protocol.encode(frame)
    return [
        msgspec.msgpack.decode(packed),
        json.loads(protocol.msgpack_to_json(packed)),
        json.loads(protocol.encode_json(frame)),
    ]


def test_samples_cover_every_frame_type() -> None:
    assert {type(f) for f in PHONE_SAMPLES} == set(PHONE_TYPES)
    assert {type(f) for f in HUB_SAMPLES} == set(HUB_TYPES)


@pytest.mark.parametrize("frame", PHONE_SAMPLES, ids=lambda f: type(f).__name__)
def test_schema_accepts_phone_frames(published: dict[str, Any], frame: Any) -> None:
    phone, hub = _validator(published, "phone_to_hub"), _validator(published, "hub_to_phone")
    for wire in _wire_forms(frame):
        phone.validate(wire)
        assert not hub.is_valid(wire), wire


@pytest.mark.parametrize("frame", HUB_SAMPLES, ids=lambda f: type(f).__name__)
def test_schema_accepts_hub_frames(published: dict[str, Any], frame: Any) -> None:
    phone, hub = _validator(published, "phone_to_hub"), _validator(published, "hub_to_phone")
    for wire in _wire_forms(frame):
        hub.validate(wire)
        assert not phone.is_valid(wire), wire


@pytest.mark.parametrize(
    "broken",
    [
        {"t": "pos", "lat": 91.0, "lon": 0.0, "ts": 1.0},
        {"t": "pos", "lat": 0.0, "lon": 0.0},
        {"t": "ack", "seq": -1},
        {"t": "accept", "assignment": "A1", "id": ""},
        {"t": "accept", "assignment": "A1", "id": "c1", "extra": True},
        {"t": "dispute", "assignment": "A1", "id": "c1", "reason": ""},
        {"t": "dispute", "assignment": "A1", "id": "c1", "reason": "  "},
        {"t": "dispute", "assignment": "A1", "id": "c1", "reason": "x\u0000"},
        {"t": "teleport"},
        {"squad": "S00001", "token": "t"},
    ],
    ids=lambda b: str(b.get("t")),
)
def test_schema_refuses_what_the_codec_refuses(
    published: dict[str, Any], broken: dict[str, Any]
) -> None:
    assert not _validator(published, "phone_to_hub").is_valid(broken)
    with pytest.raises(msgspec.ValidationError):
        protocol.decode_phone(json.dumps(broken))


# ---- asyncapi.yaml ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    text = (API_DIR / "asyncapi.yaml").read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:  # the generator wrote JSON text (valid YAML 1.2)
        doc: dict[str, Any] = json.loads(text)
    else:
        doc = yaml.safe_load(text)
    return doc


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_asyncapi_messages_cover_every_frame_type(asyncapi: dict[str, Any]) -> None:
    assert asyncapi["asyncapi"].startswith("2.6")
    channel = asyncapi["channels"]["/ws/field"]
    messages = asyncapi["components"]["messages"]
    for operation, types in (("publish", PHONE_TYPES), ("subscribe", HUB_TYPES)):
        listed = [_resolve(asyncapi, m["$ref"]) for m in channel[operation]["message"]["oneOf"]]
        assert [m["name"] for m in listed] == [_tag(cls) for cls in types], operation
        for cls in types:
            message = messages[_tag(cls)]
            assert message["payload"] == {"$ref": f"#/components/schemas/{cls.__name__}"}
    assert set(messages) == {_tag(cls) for cls in (*PHONE_TYPES, *HUB_TYPES)}


def test_asyncapi_schemas_are_the_published_ones(
    asyncapi: dict[str, Any], published: dict[str, Any]
) -> None:
    schemas = asyncapi["components"]["schemas"]
    assert set(schemas) == set(published["$defs"])
    refs = _refs(asyncapi)
    assert refs and not [r for r in refs if "$defs" in r]
    for ref in refs:
        _resolve(asyncapi, ref)  # every pointer lands somewhere
    as_published = json.loads(json.dumps(schemas).replace("#/components/schemas/", "#/$defs/"))
    assert as_published == published["$defs"]


def test_asyncapi_binding_names_both_subprotocols(asyncapi: dict[str, Any]) -> None:
    channel = asyncapi["channels"]["/ws/field"]
    header = channel["bindings"]["ws"]["headers"]["properties"]["Sec-WebSocket-Protocol"]
    assert header["enum"] == list(protocol.SUBPROTOCOLS)
    kinds = {s["name"]: s["frames"] for s in channel["x-subprotocols"]}
    assert kinds == {protocol.SUBPROTOCOL_MSGPACK: "binary", protocol.SUBPROTOCOL_JSON: "text"}


def test_asyncapi_examples_validate_and_decode(asyncapi: dict[str, Any]) -> None:
    messages = asyncapi["components"]["messages"]
    for cls in (*PHONE_TYPES, *HUB_TYPES):
        message = messages[_tag(cls)]
        validator = jsonschema.Draft202012Validator(
            {"components": asyncapi["components"], **message["payload"]}
        )
        decode = protocol.decode_phone if cls in PHONE_TYPES else protocol.decode_hub
        assert message["examples"], cls
        for example in message["examples"]:
            validator.validate(example["payload"])
            assert type(decode(json.dumps(example["payload"]))) is cls
