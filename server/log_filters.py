"""No secret in a log line: the access log (and uvicorn's WebSocket lines) never show a
query string, where a careless client may have put a token (``?token=…``)."""

from __future__ import annotations

import copy
import logging
from typing import Any

from uvicorn.config import LOGGING_CONFIG


def without_query(value: object) -> object:
    """A request path with its query string cut off (``/a?token=x`` -> ``/a?…``); any other
    value unchanged."""
    if isinstance(value, str) and value.startswith("/") and "?" in value:
        return value.partition("?")[0] + "?…"
    return value


class DropQueryStrings(logging.Filter):
    """Rewrites the record's arguments; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(without_query(arg) for arg in record.args)
        return True


def uvicorn_log_config(form: str = "text") -> dict[str, Any]:
    """uvicorn's own logging configuration with :class:`DropQueryStrings` on its access and
    error loggers (the latter logs WebSocket handshakes with their path); with ``json`` its
    lines are JSON objects like the hub's own (see server.cli.configure_logging)."""
    config = copy.deepcopy(LOGGING_CONFIG)
    if form == "json":
        for name in ("default", "access"):
            config["formatters"][name] = {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            }
    config.setdefault("filters", {})["drop_query_strings"] = {"()": DropQueryStrings}
    for name in ("uvicorn.access", "uvicorn.error"):
        config["loggers"].setdefault(name, {})["filters"] = ["drop_query_strings"]
    return config
