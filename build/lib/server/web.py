"""Where the browser pages live (served by the hub itself: no CDN)."""

from __future__ import annotations

from pathlib import Path


def static_dir() -> Path:
    return Path(__file__).parent / "static"
