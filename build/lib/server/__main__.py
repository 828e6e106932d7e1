"""``python -m server --host H --port P``: one hub process.

Without ``REDIS_URL`` it starts the embedded Redis (data in ``DISPATCH_DATA_DIR``) and stops
it on exit. The README's run command (``simulations.demo``) wraps this with a simulated city.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys

import uvicorn

from server.embedded_redis import EmbeddedRedis
from server.settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    embedded: EmbeddedRedis | None = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(os.path.join(settings.data_dir, "redis")).start()
        settings.redis_url = embedded.url
        print(f"embedded Redis 6.2 at {embedded.url} (data in {embedded.data_dir})", flush=True)
    print(
        f"hub on http://{args.host}:{args.port}/  field socket ws://{args.host}:{args.port}/ws/field",
        flush=True,
    )
    print("API tokens (role:token): " + (settings.tokens or ""), flush=True)
    from server.hub import create_app

    app = create_app(settings)
    # Long-lived connections make full collections the tail of the latency (SPEC): collect
    # young objects often, old ones rarely.
    gc.set_threshold(50_000, 50, 100)
    try:
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            ws_ping_interval=settings.heartbeat_s,
            ws_ping_timeout=settings.heartbeat_s,
            ws_max_size=max(65536, settings.max_frame_bytes * 4),
            backlog=4096,
            timeout_graceful_shutdown=5,
        )
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
