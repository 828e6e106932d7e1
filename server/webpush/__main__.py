"""Print a new VAPID key for DISPATCH_WEBPUSH_PRIVATE_KEY (give every hub of the city the
same one; keep it secret), and the public key phones will subscribe with.

    python -m server.webpush
"""

from __future__ import annotations

from py_vapid import Vapid02

from server.webpush.vapid import VapidSigner, new_private_key


def main() -> None:
    private = new_private_key()
    public = VapidSigner(Vapid02.from_raw(private.encode()), "mailto:x@localhost").public_key
    print(f"DISPATCH_WEBPUSH_PRIVATE_KEY={private}")
    print(f"# public key (what phones subscribe with): {public}")


if __name__ == "__main__":
    main()
