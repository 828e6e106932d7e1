"""Redis replies as text. The hub's Redis client returns bytes (frames are binary), so every
text field read back goes through :func:`text`."""

from __future__ import annotations


def text(value: object) -> str:
    """A Redis reply as ``str``: bytes are UTF-8 decoded, None is ""."""
    kind = type(value)
    if kind is bytes:
        return value.decode()  # type: ignore[attr-defined, no-any-return]
    if kind is str:
        return value  # type: ignore[return-value]
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode()
    return str(value)
