"""The app's components (being split out of :mod:`server.hub`)."""

from __future__ import annotations

from server.hub import Services as Components

__all__ = ["Components"]
