"""The hub's VAPID key (RFC 8292): one EC P-256 key that every hub process of the city
shares, since a phone's subscription is bound to the public key it was made with.

The key comes from ``webpush_private_key`` (base64url of the raw 32-byte scalar, for
containers that share no data directory), else from ``webpush_key_file`` or, by default,
``<data_dir>/webpush-vapid.pem``, made on the first start with mode 0600; processes starting
at once agree on one file (it is linked into place, never overwritten).

    python -m server.webpush      prints a new key for DISPATCH_WEBPUSH_PRIVATE_KEY
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02, b64urlencode

from server.private_files import DIR_MODE, FILE_MODE

KEY_FILE = "webpush-vapid.pem"
TOKEN_LIFETIME_S = 12 * 3600  # the JWT's ``exp``: push services refuse more than 24 h
RENEW_BEFORE_S = 3600  # a cached header is replaced this long before it expires


def key_path(key_file: str | None, data_dir: str) -> Path:
    return Path(key_file) if key_file else Path(data_dir) / KEY_FILE


def hub_key(private_key: str | None, key_file: str | None, data_dir: str) -> Vapid02:
    """The hub's key, from the settings of the same names (see the module's docstring)."""
    if private_key:
        try:
            return Vapid02.from_raw(private_key.strip().encode())
        except Exception:  # noqa: BLE001 - whatever the decoding raises: say which setting
            raise ValueError(
                "DISPATCH_WEBPUSH_PRIVATE_KEY: not a base64url P-256 private key "
                "(python -m server.webpush makes one)"
            ) from None
    return load_or_create(key_path(key_file, data_dir))


def new_private_key() -> str:
    """A new key as DISPATCH_WEBPUSH_PRIVATE_KEY takes it."""
    key = Vapid02()
    key.generate_keys()
    number = key.private_key.private_numbers().private_value
    return str(b64urlencode(number.to_bytes(32, "big")))


def load_or_create(path: Path) -> Vapid02:
    """The key in ``path``, made (0600) if the file does not exist yet."""
    if not path.exists():
        _create(path)
    os.chmod(path, FILE_MODE)
    return Vapid02.from_pem(path.read_bytes())


def _create(path: Path) -> None:
    """Write a new key beside ``path`` and link it into place: a process that loses the race
    to another one starting at the same moment reads the winner's key."""
    # A folder made here is private; an existing one (the operator's) keeps its mode.
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    key = Vapid02()
    key.generate_keys()
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(scratch, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_pem())
    try:
        os.link(scratch, path)
    except FileExistsError:
        pass
    finally:
        scratch.unlink()


class VapidSigner:
    """Signs the ``Authorization`` header of a push, one per push service origin, renewed an
    hour before its token expires (an ECDSA signature per push would be wasted work)."""

    def __init__(self, key: Vapid02, subject: str) -> None:
        if not re.match(r"^(mailto:[^@\s]+@[^@\s]+|https://[^\s/]+\S*)$", subject):
            # found now, not at the first offer: py-vapid would refuse every signature
            raise ValueError(f"DISPATCH_WEBPUSH_SUBJECT: {subject!r} is not mailto: or https:")
        self._key = key
        self._subject = subject
        self._headers: dict[str, tuple[str, float]] = {}

    @property
    def public_key(self) -> str:
        """The ``applicationServerKey`` a phone subscribes with: the uncompressed P-256 point,
        base64url without padding."""
        raw = self._key.public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return str(b64urlencode(raw))

    def authorization(self, endpoint: str, now: float | None = None) -> str:
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time() if now is None else now
        cached = self._headers.get(audience)
        if cached is not None and cached[1] - RENEW_BEFORE_S > now:
            return cached[0]
        expires = int(now) + TOKEN_LIFETIME_S
        claims = {"aud": audience, "exp": expires, "sub": self._subject}
        header = str(self._key.sign(claims)["Authorization"])
        self._headers[audience] = (header, expires)
        return header
