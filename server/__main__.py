"""``python -m server --host H --port P``: one hub process.

Without ``REDIS_URL`` it starts the embedded Redis (data in ``DISPATCH_DATA_DIR``) and stops
it on exit. The README's run command (``simulations.demo``) wraps this with a simulated city.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import resource
import sys
from pathlib import Path

from server.cli import start
from server.private_files import private_dir, write_private


def _raise_open_files_limit() -> None:
    """Every phone is a socket: take the whole hard limit of open files (a soft limit of 1,024
    would cap a hub near a thousand squads)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    started = start(parser, argv)
    if started is None:
        return 2
    args, settings = started

    def say(message: str) -> None:
        """To the console; with JSON logs, as a log line like every other line."""
        if settings.log_format == "json":
            logging.getLogger("server").warning(message)
        else:
            print(message, flush=True)

    say(
        f"hub on http://{args.host}:{args.port}/  field socket ws://{args.host}:{args.port}/ws/field"
    )
    if os.environ.get("DISPATCH_TOKENS"):
        say("API tokens: as given in DISPATCH_TOKENS")  # never echo secrets
    else:
        # Not on the console: its output usually ends up in a log file.
        kept = Path(private_dir(settings.data_dir)) / "generated-tokens.txt"
        write_private(kept, (settings.tokens or "").replace(",", "\n") + "\n")
        say(f"API tokens (generated; role:token): in {kept}")
    _raise_open_files_limit()
    from server.app import create_app, drain
    from server.net import serve

    app = create_app(settings)
    # Long-lived connections make full collections the tail of the latency (SPEC): collect
    # young objects often, old ones rarely.
    gc.set_threshold(50_000, 50, 100)
    serve(
        app,
        settings,
        args.host,
        args.port,
        args.log_level,
        drain=lambda stop_listening: drain(app, stop_listening),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
