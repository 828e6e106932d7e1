"""What the hub's and the ledger's command lines share: a ``--log-level``, the log format,
and the settings from the environment, refused with a one-line error."""

from __future__ import annotations

import argparse
import logging
import sys

from server.settings import Settings, SettingsError, load_settings


def start(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> tuple[argparse.Namespace, Settings] | None:
    """Parse ``argv``, set up logging, and load the settings; None (after printing why) if
    the environment is wrong: the caller exits with 2."""
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return args, load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
