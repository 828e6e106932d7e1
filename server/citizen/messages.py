"""The words of the messages to the caller's phone: templates from ``messages.toml``, checked
at start, and :func:`render`, a pure function from a message kind and its values to text.

A template file is data a deployment may edit (a city's own wording, another sender name), so
every mistake in it is caught when the hub starts, with the place named, never when a
citizen's message is due: a kind or a language missing, a placeholder the kind does not
provide (``{numbr}``), a format the text cannot take (``{id!r}``, ``{id:>9}``, ``{id.x}``).
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

Lang = Literal["zh", "en"]
LANGS: tuple[Lang, ...] = ("zh", "en")  # zh (zh-CN) is the default (SPEC: interface language)
DEFAULT_LANG: Lang = "zh"
DEFAULT_PATH = Path(__file__).parent / "messages.toml"

# Every message kind, and the placeholders it provides beside {id}.
KINDS: dict[str, frozenset[str]] = {
    "received": frozenset(),
    "received_unit": frozenset({"unit"}),
    "transferred": frozenset({"service"}),
    "accepted": frozenset(),
    "en_route": frozenset(),
    "arrived": frozenset(),
    "deferred": frozenset({"until", "note"}),
    "resolved": frozenset({"note"}),
    "cancelled": frozenset({"reason", "note"}),
}
SERVICES = ("police", "fire", "medical")  # the routes a request can be transferred to
TIME_FORMAT = "%Y-%m-%d %H:%M"  # a promised time, in the city's time zone


class TemplateError(ValueError):
    """The templates file cannot be used; the message names the file and the place."""


@dataclass(frozen=True, slots=True)
class Templates:
    """Checked templates: ``texts[kind][lang]``, ``services[route][lang]``,
    ``reasons[code][lang]``."""

    texts: Mapping[str, Mapping[Lang, str]]
    services: Mapping[str, Mapping[Lang, str]]
    reasons: Mapping[str, Mapping[Lang, str]]


def load_templates(path: str | Path = DEFAULT_PATH) -> Templates:
    """Read and check a templates file. Raises TemplateError naming the problem."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TemplateError(f"{file}: cannot read the message templates: {exc}") from None
    return parse_templates(data, str(file))


def parse_templates(data: Mapping[str, object], source: str = "templates") -> Templates:
    """Check decoded TOML (pure). Raises TemplateError naming the first problem found."""
    known = {*KINDS, "services", "reasons"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TemplateError(
            f"{source}: unknown message kind [{unknown[0]}] (known: {', '.join(sorted(KINDS))})"
        )
    texts = {}
    for kind, allowed in KINDS.items():
        texts[kind] = _languages(data.get(kind), f"{source}: [{kind}]")
        for lang, template in texts[kind].items():
            _check_placeholders(template, allowed | {"id"}, f"{source}: [{kind}] {lang}")
    services = _names(data.get("services", {}), f"{source}: [services]")
    missing = [route for route in SERVICES if route not in services]
    if missing:
        raise TemplateError(f"{source}: [services.{missing[0]}] is missing")
    reasons = _names(data.get("reasons", {}), f"{source}: [reasons]")
    return Templates(texts, services, reasons)


def _languages(table: object, where: str) -> dict[Lang, str]:
    if not isinstance(table, dict):
        raise TemplateError(f"{where} is missing (a table with {' and '.join(LANGS)})")
    extra = sorted(set(table) - set(LANGS))
    if extra:
        raise TemplateError(f"{where}: unknown language {extra[0]!r} (known: {', '.join(LANGS)})")
    result: dict[Lang, str] = {}
    for lang in LANGS:
        text = table.get(lang)
        if not isinstance(text, str) or not text.strip():
            raise TemplateError(f"{where}: {lang} is missing or empty")
        result[lang] = text
    return result


def _names(table: object, where: str) -> dict[str, dict[Lang, str]]:
    if not isinstance(table, dict):
        raise TemplateError(f"{where} must be a table of tables")
    result = {}
    for code, names in table.items():
        result[code] = _languages(names, f"{where[:-1]}.{code}]")
        for lang, name in result[code].items():
            _check_placeholders(name, frozenset(), f"{where[:-1]}.{code}] {lang}")
    return result


def _check_placeholders(template: str, allowed: frozenset[str], where: str) -> None:
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:  # a lone brace
        raise TemplateError(f"{where}: {exc} (write a literal brace twice: {{{{ }}}})") from None
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in allowed:
            known = ", ".join(f"{{{p}}}" for p in sorted(allowed)) or "none"
            raise TemplateError(
                f"{where}: unknown placeholder {{{name}}} (this message may use: {known})"
            )
        if spec or conversion:
            raise TemplateError(f"{where}: {{{name}}} must be plain, without ! or :")


def render(templates: Templates, kind: str, lang: str, request_id: str, **values: str) -> str:
    """The text of message ``kind`` in ``lang`` (the default language for an unknown one).
    ``values`` are the kind's placeholders, already in words; a missing one is empty.
    Raises KeyError for an unknown kind (a programming error, not the citizen's)."""
    chosen: Lang = lang if lang in LANGS else DEFAULT_LANG  # type: ignore[assignment]
    template = templates.texts[kind][chosen]
    allowed = KINDS[kind]
    given = {name: values.get(name, "") for name in allowed}
    return template.format(id=request_id, **given)


def lang_of(value: str | None) -> Lang:
    """A stored language code, or the default."""
    return value if value in LANGS else DEFAULT_LANG  # type: ignore[return-value]


def service_name(templates: Templates, route: str, lang: Lang) -> str:
    names = templates.services.get(route)
    return names[lang] if names else route


def reason_words(templates: Templates, reason: str, lang: Lang) -> str:
    names = templates.reasons.get(reason)
    return names[lang] if names else reason


def local_time(at: float, zone: ZoneInfo) -> str:
    """``at`` (epoch seconds) as the city's clock shows it. Raises ValueError (or
    OverflowError, OSError) for a time the calendar cannot show."""
    return datetime.fromtimestamp(at, zone).strftime(TIME_FORMAT)
