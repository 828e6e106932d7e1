"""``python -m server.api``: write the OpenAPI document of the app's routes to
``docs/openapi.json``; ``--check``: fail if the committed one is stale."""

from __future__ import annotations

import argparse
import json
import sys

from starlette.routing import BaseRoute

from server.api.openapi import DOCUMENT_PATH, text
from server.app import create_app
from server.settings import load_settings


def _app_routes() -> list[BaseRoute]:
    return list(create_app(load_settings({})).routes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    generated = text(_app_routes())
    if args.check:
        current = DOCUMENT_PATH.read_text() if DOCUMENT_PATH.exists() else "{}"
        if json.loads(current) != json.loads(generated):
            print(f"{DOCUMENT_PATH} is stale: run python -m server.api", file=sys.stderr)
            return 1
        return 0
    DOCUMENT_PATH.write_text(generated)
    print(f"wrote {DOCUMENT_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
