"""Generate the published field-protocol documents from the code.

    python fieldapp-api/generate.py           write the files
    python fieldapp-api/generate.py --check   exit 1 (with a diff) if a committed file is stale

Outputs, all derived from :mod:`dispatch_field.protocol`, :mod:`dispatch_field.codes` and
:mod:`dispatch_field.limits` (nothing here imports the hub: ``fieldapp-api`` stands alone):

* ``fieldapp-api/schema.json``: ``protocol.published_schema()``, pretty-printed, sorted keys.
* ``fieldapp-api/asyncapi.yaml``: an AsyncAPI 2.6 document of the ``/ws/field`` channel, one
  message per frame type, payload schemas embedded from the JSON Schema components. YAML is
  written with PyYAML (a dependency of ``uvicorn[standard]``); without it the file holds JSON
  text, which is valid YAML 1.2.
* the generated sections of ``fieldapp-api/README.md`` (between ``<!-- NAME:begin -->`` and
  ``<!-- NAME:end -->``): frame tables, close codes, error codes, settings. The prose around
  them is written by hand.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import io
import json
import re
import sys
import textwrap
import tokenize
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # dispatch_field imports without an installed package
    sys.path.append(str(HERE))

from dispatch_field import codes, protocol  # noqa: E402
from dispatch_field.limits import FieldLimits  # noqa: E402

SCHEMA_PATH = HERE / "schema.json"
ASYNCAPI_PATH = HERE / "asyncapi.yaml"
README_PATH = HERE / "README.md"
CHANNEL = "/ws/field"

# Close codes the hub or the WebSocket layer may use besides CloseCode (RFC 6455 names).
STANDARD_CLOSE_CODES = {
    1000: ("NORMAL_CLOSURE", "Normal closure (usually the phone's own close)."),
    1001: ("GOING_AWAY", "The hub is going away (shutting down or restarting)."),
    1006: ("ABNORMAL_CLOSURE", "Connection lost without a close frame (never sent on the wire)."),
    1009: ("MESSAGE_TOO_BIG", "A frame above the transport limit; do not send that frame again."),
    1011: ("INTERNAL_ERROR", "Unexpected condition in the server."),
    1012: ("SERVICE_RESTART", "The service is restarting."),
    1013: ("TRY_AGAIN_LATER", "The hub cannot reach its live state (Redis) now: try again."),
}

# Meanings of close codes whose definition in codes.py carries no comment.
CLOSE_CODE_NOTES = {
    "SERVER_RESTART": "the hub is shutting down or restarting",
    "INTERNAL_ERROR": "the hub failed while serving this connection",
    "AUTH_FAILED": "unknown squad or wrong token (an `auth_failed` error frame comes first)",
    "UNSUPPORTED_SUBPROTOCOL": "the connection offered none of the supported subprotocols",
}


# ---- sample frames (examples in the documents; validated by the tests) --------------------

_REQUEST = protocol.RequestInfo(
    id="20261130-000042",
    category="water_main_burst",
    description="Burst pipe flooding the pavement",
    lat=34.6197,
    lon=112.454,
    address="Zhongzhou Road 12",
    caller_phone="13800138000",
    accept_by=1767225900.0,
    arrive_by=1767227400.0,
    resolve_by=1767240000.0,
)

SAMPLES: tuple[Any, ...] = (
    protocol.Hello(squad="S00012", token="s3cr3t-squad-token", last_seq=41),
    protocol.Pos(lat=34.6197, lon=112.454, ts=1767225600.5, acc=8.0),
    protocol.Duty(on=True),
    protocol.Ack(seq=42),
    protocol.Accept(assignment="A3f9c1d7e20b4", id="S00012-19b7c2e4a10-1", at=1767225601.25),
    protocol.Enroute(assignment="A3f9c1d7e20b4", id="S00012-19b7c2e4a10-2", at=1767225630.0),
    protocol.Arrive(assignment="A3f9c1d7e20b4", id="S00012-19b7c2e4a10-3", at=1767226200.0),
    protocol.Resolve(
        assignment="A3f9c1d7e20b4",
        id="S00012-19b7c2e4a10-4",
        at=1767229800.0,
        note="Valve closed and pipe section replaced",
    ),
    protocol.Defer(
        assignment="A3f9c1d7e20b4",
        id="S00012-19b7c2e4a10-5",
        at=1767227000.0,
        until=1767312000.0,
        reason="Needs a spare part from the depot",
    ),
    protocol.Dispute(
        assignment="A3f9c1d7e20b4",
        id="S00012-19b7c2e4a10-6",
        reason="The pipe belongs to the neighbouring district's network",
    ),
    protocol.Welcome(squad="S00012", last_seq=42, server_time=1767225600.125),
    protocol.Offer(assignment="A3f9c1d7e20b4", request=_REQUEST, respond_by=1767225660.0, seq=42),
    protocol.Revoke(assignment="A3f9c1d7e20b4", reason="offer_window_passed", seq=43),
    protocol.Notice(
        notice=protocol.NoticeInfo(
            id="20261130-000042-arrive-1",
            request="20261130-000042",
            unit="water",
            squad="S00012",
            kind="arrive",
            level=1,
            issued_at=1767227400.2,
            due_at=1767227400.0,
        ),
        seq=44,
    ),
    protocol.Arrived(assignment="A3f9c1d7e20b4", at=1767226380.4),
    protocol.Resync(
        reason="outbox_trimmed",
        last_seq=57,
        assignments=[
            protocol.Assignment(assignment="A3f9c1d7e20b4", state="accepted", request=_REQUEST)
        ],
    ),
    protocol.Ok(id="S00012-19b7c2e4a10-1"),
    protocol.Error(
        code=codes.ErrorCode.INVALID_TRANSITION,
        message=("cannot resolve a request that is accepted (allowed from: deferred, on_scene)"),
        id="S00012-19b7c2e4a10-4",
    ),
)


def phone_frame_types() -> tuple[type, ...]:
    return tuple(protocol.PhoneFrame.__args__)  # type: ignore[attr-defined]


def hub_frame_types() -> tuple[type, ...]:
    return tuple(protocol.HubFrame.__args__)  # type: ignore[attr-defined]


def tag_of(cls: type) -> str:
    return str(cls.__struct_config__.tag)  # type: ignore[attr-defined]


def sample_of(cls: type) -> Any:
    for frame in SAMPLES:
        if type(frame) is cls:
            return frame
    raise LookupError(f"generate.py: add a sample {cls.__name__} frame to SAMPLES")


def wire_json(frame: Any) -> dict[str, Any]:
    """The frame as it travels: MessagePack as the hub sends it (numbered frames stamped with
    :func:`protocol.stamp_seq`), re-encoded as the JSON a ``dispatch.v1.json`` peer sees."""
    if isinstance(frame, protocol.NUMBERED) and frame.seq:
        body = protocol.encode(msgspec.structs.replace(frame, seq=0))
        data = protocol.stamp_seq(body, frame.seq)
    else:
        data = protocol.encode(frame)
    result: dict[str, Any] = json.loads(protocol.msgpack_to_json(data))
    return result


# ---- text helpers -----------------------------------------------------------------------


def _md(text: str) -> str:
    """A docstring or comment as one Markdown paragraph (reST ``code`` -> `code`)."""
    return " ".join(text.replace("``", "`").split())


def _doc(cls: type) -> str:
    own = cls.__dict__.get("__doc__")
    return _md(inspect.cleandoc(own)) if own else ""


def _first_sentence(text: str) -> str:
    match = re.match(r"(.+?\.)(\s|$)", text)
    return match.group(1) if match else text.rstrip(".") + "."


def trailing_comments(obj: Any) -> dict[str, str]:
    """``NAME -> comment`` for each assignment in a class body that ends with ``# comment``."""
    source = textwrap.dedent(inspect.getsource(obj))
    comments = {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    found: dict[str, str] = {}
    (node,) = ast.parse(source).body
    assert isinstance(node, ast.ClassDef)
    for item in node.body:
        if isinstance(item, ast.Assign) and len(item.targets) == 1:
            target = item.targets[0]
        elif isinstance(item, ast.AnnAssign):
            target = item.target
        else:
            continue
        if isinstance(target, ast.Name) and item.end_lineno in comments:
            found[target.id] = comments[item.end_lineno]
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---- schema.json --------------------------------------------------------------------------


def schema() -> dict[str, Any]:
    return protocol.published_schema()


def schema_text() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ---- asyncapi.yaml ------------------------------------------------------------------------


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                value.replace("#/$defs/", "#/components/schemas/", 1)
                if key == "$ref" and isinstance(value, str)
                else _rewrite_refs(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(value) for value in node]
    return node


def _message(cls: type, direction: str) -> dict[str, Any]:
    tag = tag_of(cls)
    description = _doc(cls) or _command_fallback(cls)
    message: dict[str, Any] = {
        "messageId": tag,
        "name": tag,
        "title": cls.__name__,
        "summary": _first_sentence(description),
        "description": description,
        "payload": {"$ref": f"#/components/schemas/{cls.__name__}"},
        "tags": [{"name": direction}],
        "examples": [{"name": tag, "payload": wire_json(sample_of(cls))}],
    }
    if issubclass(cls, protocol.COMMANDS):
        message["tags"].append({"name": "command"})
    if issubclass(cls, protocol.NUMBERED):
        message["tags"].append({"name": "numbered"})
    if issubclass(cls, (*protocol.COMMANDS, protocol.Ok, protocol.Error)):
        message["correlationId"] = {
            "description": "The command id chosen by the phone; `ok`/`error` carry it back.",
            "location": "$message.payload#/id",
        }
    return message


def _command_fallback(cls: type) -> str:
    if issubclass(cls, protocol.COMMANDS):
        return f"Reports the `{tag_of(cls)}` step of an assignment."
    return ""


def asyncapi() -> dict[str, Any]:
    doc = schema()
    schemas = _rewrite_refs(doc["$defs"])
    phone, hub = phone_frame_types(), hub_frame_types()
    messages = {tag_of(c): _message(c, "phone-to-hub") for c in phone}
    messages |= {tag_of(c): _message(c, "hub-to-phone") for c in hub}
    version = protocol.SUBPROTOCOL_JSON.split(".")[1]
    subprotocols = [
        {
            "name": protocol.SUBPROTOCOL_MSGPACK,
            "frames": "binary",
            "contentType": "application/msgpack",
            "description": "Each WebSocket binary message is one MessagePack map.",
        },
        {
            "name": protocol.SUBPROTOCOL_JSON,
            "frames": "text",
            "contentType": "application/json",
            "description": "Each WebSocket text message is one JSON object.",
        },
    ]
    return {
        "asyncapi": "2.6.0",
        "id": "urn:city-linkage-dispatch:field-protocol",
        "info": {
            "title": doc["title"],
            "version": version,
            "description": (
                "Frames between a squad's phone and the dispatch hub over one WebSocket. Every "
                "frame is a map whose `t` field names its type. The same frames travel as "
                f"MessagePack (subprotocol `{protocol.SUBPROTOCOL_MSGPACK}`, binary messages) "
                f"or JSON (subprotocol `{protocol.SUBPROTOCOL_JSON}`, text messages). "
                "Generated by fieldapp-api/generate.py from dispatch_field/protocol.py; "
                "see fieldapp-api/README.md for the rules (handshake, seq/ack, retries, "
                "close codes)."
            ),
        },
        "servers": {
            "hub": {
                "url": "{host}",
                "protocol": "ws",
                "description": "A hub process (use wss behind TLS termination).",
                "variables": {"host": {"default": "127.0.0.1:8000"}},
            },
        },
        "defaultContentType": "application/json",
        "channels": {
            CHANNEL: {
                "description": (
                    "The field socket. Send `hello` first; the hub answers `welcome`, replays "
                    "unacknowledged numbered frames, then streams new ones."
                ),
                "x-subprotocols": subprotocols,
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "headers": {
                            "type": "object",
                            "properties": {
                                "Sec-WebSocket-Protocol": {
                                    "type": "string",
                                    "enum": list(protocol.SUBPROTOCOLS),
                                    "description": (
                                        f"`{protocol.SUBPROTOCOL_MSGPACK}`: binary frames, "
                                        f"MessagePack. `{protocol.SUBPROTOCOL_JSON}`: text "
                                        "frames, JSON. Offering neither closes the connection "
                                        f"with {int(codes.CloseCode.UNSUPPORTED_SUBPROTOCOL)}."
                                    ),
                                },
                            },
                            "required": ["Sec-WebSocket-Protocol"],
                        },
                        "bindingVersion": "0.1.0",
                    },
                },
                "publish": {
                    "operationId": "phoneToHub",
                    "summary": "Frames a squad's phone sends to the hub.",
                    "message": {
                        "oneOf": [{"$ref": f"#/components/messages/{tag_of(c)}"} for c in phone]
                    },
                },
                "subscribe": {
                    "operationId": "hubToPhone",
                    "summary": "Frames the hub sends to a squad's phone.",
                    "message": {
                        "oneOf": [{"$ref": f"#/components/messages/{tag_of(c)}"} for c in hub]
                    },
                },
            },
        },
        "components": {"schemas": schemas, "messages": messages},
        "tags": [
            {"name": "phone-to-hub", "description": "Sent by the phone."},
            {"name": "hub-to-phone", "description": "Sent by the hub."},
            {
                "name": "command",
                "description": "A step on an assignment, answered by `ok` or "
                "`error` with the same `id`.",
            },
            {
                "name": "numbered",
                "description": "Carries `seq`; kept until acknowledged and "
                "replayed after a reconnect.",
            },
        ],
    }


def _yaml_dump() -> Callable[[Any], str] | None:
    try:
        import yaml
    except ImportError:
        return None

    def dump(data: Any) -> str:
        text: str = yaml.safe_dump(
            data, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False
        )
        return text

    return dump


def asyncapi_text() -> str:
    header = (
        "# Generated by fieldapp-api/generate.py from dispatch_field/protocol.py: do not edit.\n"
    )
    dump = _yaml_dump()
    if dump is None:  # JSON is valid YAML 1.2 (and YAML comments are not JSON)
        return json.dumps(asyncapi(), indent=2, ensure_ascii=False) + "\n"
    return header + dump(asyncapi())


# ---- README sections ------------------------------------------------------------------------


def _type_of(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "enum" in prop:
        return " \\| ".join(f'`"{v}"`' for v in prop["enum"])
    if "anyOf" in prop:
        return " or ".join(_type_of(p) for p in prop["anyOf"])
    return f"{prop.get('type', 'any')}"


def _number(value: float) -> str:
    """A bound as a reader checks it: every digit (85.05112878, 4102444800), no exponent."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _constraints(prop: dict[str, Any]) -> str:
    for option in prop.get("anyOf", []):
        if option.get("type") != "null":
            return _constraints(option)
    parts = []
    if "minimum" in prop and "maximum" in prop:
        parts.append(f"{_number(prop['minimum'])} … {_number(prop['maximum'])}")
    elif "minimum" in prop:
        parts.append(f"≥ {_number(prop['minimum'])}")
    elif "maximum" in prop:
        parts.append(f"≤ {_number(prop['maximum'])}")
    low, high = prop.get("minLength"), prop.get("maxLength")
    if low is not None and high is not None:
        parts.append(f"{low}–{high} chars")
    elif high is not None:
        parts.append(f"≤ {high} chars")
    elif low is not None:
        parts.append(f"≥ {low} chars")
    return ", ".join(parts)


def _notes(prop: dict[str, Any]) -> str:
    notes = [prop.get("description", "")]
    notes += [p.get("description", "") for p in prop.get("anyOf", [])]
    return "; ".join(n for n in notes if n)


def _required(name: str, prop: dict[str, Any], required: list[str]) -> str:
    if name in required:
        return "yes"
    default = prop.get("default")
    return f"no (default `{json.dumps(default)}`)"


def _struct_table(defs: dict[str, Any], name: str, cls: type | None = None) -> str:
    spec = defs[name]
    required = spec.get("required", [])
    rows = []
    for field, prop in spec["properties"].items():
        notes = _notes(prop)
        if field == "t":
            notes = "the frame type"
        elif field == "seq" and cls is not None and issubclass(cls, protocol.NUMBERED):
            notes = "always sent by the hub (≥ 1): stamped when the frame goes out"
        rows.append(
            (
                f"`{field}`",
                _type_of(prop),
                _required(field, prop, required),
                _constraints(prop),
                notes,
            )
        )
    return _table(("Field", "Type", "Required", "Constraints", "Notes"), rows)


def _flags(cls: type) -> str:
    flags = []
    if issubclass(cls, protocol.COMMANDS):
        flags.append("a command: answered by `ok` or `error` with its `id`")
    if issubclass(cls, protocol.NUMBERED):
        flags.append("numbered: carries `seq`, kept until acknowledged, replayed on resume")
    return "".join(f"*{flag[0].upper()}{flag[1:]}.* " for flag in flags).strip()


def _frame_section(cls: type, defs: dict[str, Any]) -> str:
    description = _doc(cls) or _command_fallback(cls)
    example = json.dumps(wire_json(sample_of(cls)), ensure_ascii=False)
    parts = [
        f"#### `{tag_of(cls)}`",
        description,
        _flags(cls),
        _struct_table(defs, cls.__name__, cls),
        f"```json\n{example}\n```",
    ]
    return "\n\n".join(p for p in parts if p)


def _index(classes: Iterable[type]) -> str:
    rows = (
        (
            f"[`{tag_of(c)}`](#{tag_of(c)})",
            c.__name__,
            _first_sentence(_doc(c) or _command_fallback(c)),
        )
        for c in classes
    )
    return _table(("`t`", "Struct", "Summary"), rows)


def frames_section() -> str:
    defs = schema()["$defs"]
    parts = [
        "### Phone → hub",
        _index(phone_frame_types()),
        *(_frame_section(c, defs) for c in phone_frame_types()),
        "### Hub → phone",
        _index(hub_frame_types()),
        *(_frame_section(c, defs) for c in hub_frame_types()),
        "#### `RequestInfo`",
        "The request an `offer` is about (a nested map, not a frame; it has no `t`).",
        _struct_table(defs, "RequestInfo"),
    ]
    return "\n\n".join(parts)


def _close_action(code: int) -> str:
    if code == 1000:
        return "reconnect only if the app still needs the connection"
    if codes.should_reconnect(code):
        return "reconnect with backoff + jitter, resume with `hello`"
    return "stop; show the reason; reconnect only after a change"


def close_codes_section() -> str:
    notes = trailing_comments(codes.CloseCode)
    rows = []
    for member in codes.CloseCode:
        band = "transient" if member.reconnect else "terminal"
        meaning = (
            notes.get(member.name)
            or CLOSE_CODE_NOTES.get(member.name)
            or (member.name.replace("_", " ").lower())
        )
        rows.append(
            (
                f"`{member.value}`",
                f"`{member.name}`",
                band,
                _close_action(member.value),
                _md(meaning),
            )
        )
    custom = _table(("Code", "Name", "Band", "Phone does", "Meaning"), rows)
    standard = _table(
        ("Code", "Name", "Phone does", "Meaning"),
        (
            (f"`{code}`", f"`{name}`", _close_action(code), meaning)
            for code, (name, meaning) in sorted(STANDARD_CLOSE_CODES.items())
        ),
    )
    return "\n\n".join(
        (
            "Private codes (`dispatch_field.codes.CloseCode`): 4000-4099 transient, "
            "4100-4199 terminal.",
            custom,
            "Standard codes (RFC 6455) a phone may also see:",
            standard,
        )
    )


def error_codes_section() -> str:
    notes = trailing_comments(codes.ErrorCode)
    rows = [(f"`{m.value}`", _md(notes.get(m.name, ""))) for m in codes.ErrorCode]
    return (
        _md(inspect.cleandoc(codes.ErrorCode.__doc__ or ""))
        + "\n\n"
        + _table(("`code`", "Meaning"), rows)
    )


def settings_section() -> str:
    """The hub's phone-facing settings: dispatch_field.limits, in its order."""
    hints = typing.get_type_hints(FieldLimits, include_extras=True)
    defaults = FieldLimits()
    rows = [
        (
            f"`DISPATCH_{name.upper()}`",
            f"`{getattr(defaults, name)!r}`",
            _md(_description(hints[name])),
        )
        for name in FieldLimits.__struct_fields__
    ]
    return _table(("Variable", "Default", "Meaning"), rows)


def _description(hint: Any) -> str:
    return next(
        (
            m.description
            for m in getattr(hint, "__metadata__", ())
            if isinstance(m, msgspec.Meta) and m.description
        ),
        "",
    )


GENERATED_NOTE = "<!-- generated by generate.py: do not edit -->"
SECTIONS: dict[str, Callable[[], str]] = {
    "frames": frames_section,
    "close-codes": close_codes_section,
    "error-codes": error_codes_section,
    "settings": settings_section,
}


def render_readme(text: str) -> str:
    """``text`` with every generated section replaced; raises if a marker pair is missing."""
    for name, build in SECTIONS.items():
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        start, stop = text.find(begin), text.find(end)
        if start < 0 or stop < start or text.count(begin) != 1 or text.count(end) != 1:
            raise ValueError(f"{README_PATH.name}: expected one {begin} ... {end} pair")
        generated = f"{begin}\n{GENERATED_NOTE}\n\n{build()}\n\n{end}"
        text = text[:start] + generated + text[stop + len(end) :]
    return text


# ---- the command --------------------------------------------------------------------------


def expected() -> dict[Path, str]:
    """Every generated file and the text it should have."""
    readme = README_PATH.read_text(encoding="utf-8")
    return {
        SCHEMA_PATH: schema_text(),
        ASYNCAPI_PATH: asyncapi_text(),
        README_PATH: render_readme(readme),
    }


def _display(path: Path) -> str:
    return str(path.relative_to(HERE.parent)) if path.is_relative_to(HERE.parent) else str(path)


def _meaning(path: Path, text: str) -> Any:
    """What a document says, not how one emitter spelled it: JSON and YAML are parsed (a new
    PyYAML may fold a long line differently and still say the same); Markdown is its text."""
    if path.suffix == ".json":
        return json.loads(text)
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            return json.loads(text)  # written as JSON text when PyYAML is missing
        return yaml.safe_load(text)
    return text


def _same(path: Path, current: str, text: str) -> bool:
    if current == text:
        return True
    try:
        return bool(_meaning(path, current) == _meaning(path, text))
    except Exception:  # noqa: BLE001 - a committed file that does not parse is stale
        return False


def stale() -> list[str]:
    """A diff message per committed file whose meaning differs from what would be
    generated (parsed for JSON and YAML, text for the README)."""
    problems = []
    for path, text in expected().items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if not _same(path, current, text):
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"{path.name} (committed)",
                f"{path.name} (generated)",
                n=2,
            )
            problems.append(f"{_display(path)} is stale:\n{''.join(diff)}")
    return problems


def write() -> list[Path]:
    changed = []
    for path, text in expected().items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if a committed file differs from the generated one",
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = stale()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python fieldapp-api/generate.py", file=sys.stderr)
            return 1
        print("fieldapp-api: generated files are up to date")
        return 0
    for path in write():
        print(f"wrote {_display(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
