"""What the hub's and the ledger's command lines share: a ``--log-level``, the log format,
and the settings from the environment, refused with a one-line error."""

from __future__ import annotations

import argparse
import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from server.settings import Settings, SettingsError, load_settings
from server.store.cluster import check_redis_url


def start(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> tuple[argparse.Namespace, Settings] | None:
    """Parse ``argv``, set up logging, and load the settings; None (after printing why) if
    the environment is wrong: the caller exits with 2."""
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        check_redis_url(settings)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    configure_logging(args.log_level, settings.log_format)
    return args, settings


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str, form: str) -> None:
    """Plain lines, or (``json``) one JSON object per line with the time, level, logger and
    message, plus whatever ``extra`` a call passed: for a log shipper. Secrets are never
    logged either way (see server/log_filters.py)."""
    handler = logging.StreamHandler()
    if form == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
